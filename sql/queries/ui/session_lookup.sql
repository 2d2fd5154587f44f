-- A console request: the session of token hash $1 if it is live (not
-- signed out, within its absolute expiry, used within the idle timeout $2
-- seconds, and its key neither revoked nor expired), touched. No row: sign
-- in again.
UPDATE ops_ui_sessions s
SET last_seen_at = now()
WHERE s.token_hash = $1
  AND s.revoked_at IS NULL
  AND s.expires_at > now()
  AND s.last_seen_at > now() - make_interval(secs => $2)
  AND (s.key_id IS NULL OR EXISTS (
        SELECT 1 FROM ops_api_keys k
        WHERE k.id = s.key_id AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())))
RETURNING s.key_id, s.tenant_id, s.scopes, s.actor, s.csrf_token

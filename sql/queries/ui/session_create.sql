-- Console sign-in: $1 token hash, $2 key id (NULL = master), $3 tenant,
-- $4 scopes, $5 actor, $6 CSRF token, $7 absolute lifetime in seconds.
-- Expired sessions are deleted on the way (at most 100 per sign-in).
WITH gone AS (
    DELETE FROM ops_ui_sessions
    WHERE token_hash IN (SELECT token_hash FROM ops_ui_sessions
                         WHERE expires_at < now() - interval '1 day' LIMIT 100)
)
INSERT INTO ops_ui_sessions (token_hash, key_id, tenant_id, scopes, actor, csrf_token, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))

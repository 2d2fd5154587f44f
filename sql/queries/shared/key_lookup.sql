-- Find an API key by the SHA-256 of the presented key. Only the hash is
-- ever compared or stored. $1 key hash.
SELECT id, name, scopes, tenant_id,
       revoked_at IS NOT NULL AS revoked,
       coalesce(expires_at <= now(), false) AS expired
FROM ops_api_keys
WHERE key_hash = $1

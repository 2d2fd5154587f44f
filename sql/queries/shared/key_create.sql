-- Store a new API key: only its SHA-256 and its first characters, never the
-- key. $1 name, $2 key hash, $3 shown prefix, $4 scopes, $5 tenant,
-- $6 expires at (NULL = never), $7 created by.
INSERT INTO ops_api_keys (name, key_hash, key_prefix, scopes, tenant_id, expires_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id

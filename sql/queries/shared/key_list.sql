-- Every API key, oldest first, without its hash. No parameters.
SELECT id, name, key_prefix, scopes, tenant_id, created_at, created_by, expires_at, revoked_at
FROM ops_api_keys ORDER BY created_at

-- Revoke key $1 at once (the shim looks keys up on every request). No row
-- when there is no such unrevoked key.
UPDATE ops_api_keys SET revoked_at = now()
WHERE id = $1 AND revoked_at IS NULL
RETURNING tenant_id

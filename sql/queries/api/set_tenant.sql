-- Bind the transaction to tenant $1 for row-level security (SET LOCAL:
-- gone at commit or rollback, so a pooled connection never keeps it).
SELECT set_config('app.tenant_id', $1, true)

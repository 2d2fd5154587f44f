-- Remove login role $1's tenant binding (its inserts are then refused), and
-- audit it. $2 who. No row when it had none.
WITH gone AS (
    DELETE FROM ops_tenant_roles WHERE role_name = $1 RETURNING role_name, tenant_id
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
    SELECT left($2, 200), 'tenant.unbind', gone.role_name, gone.tenant_id, '{}'::jsonb FROM gone
)
SELECT role_name FROM gone

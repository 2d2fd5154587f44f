-- Bind login role $1 to tenant $2 (replacing an earlier binding), and audit
-- it. $3 who. No row when no role $1 exists.
WITH bound AS (
    INSERT INTO ops_tenant_roles (role_name, tenant_id, bound_by, bound_at)
    SELECT $1::text, $2::text, $3::text, now()
    WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname::text = $1::text)
    ON CONFLICT (role_name) DO UPDATE
    SET tenant_id = EXCLUDED.tenant_id, bound_by = EXCLUDED.bound_by, bound_at = now()
    RETURNING role_name, tenant_id
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
    SELECT left($3::text, 200), 'tenant.bind', bound.role_name, bound.tenant_id, '{}'::jsonb FROM bound
)
SELECT role_name FROM bound

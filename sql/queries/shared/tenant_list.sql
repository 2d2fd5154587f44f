-- Every role-to-tenant binding. No parameters.
SELECT role_name, tenant_id, bound_by, bound_at FROM ops_tenant_roles ORDER BY role_name

-- opsrunner schema v8: applications enqueue by plain SQL as a role of their
-- own (opsrunner_app, in sql/roles/roles.sql), bound to one tenant.
--
-- The tenant of an application comes from its login role, through a binding
-- only operators change (`opsrunner tenants bind ROLE TENANT`): never from a
-- setting the session could change itself.
CREATE TABLE ops_tenant_roles (
    role_name  text PRIMARY KEY CHECK (char_length(role_name) BETWEEN 1 AND 63),
    tenant_id  text NOT NULL CHECK (char_length(tenant_id) BETWEEN 1 AND 200),
    bound_by   text,
    bound_at   timestamptz NOT NULL DEFAULT now()
);

-- What an application may ask for. One row; operators change it by SQL.
-- Negative priorities (run first) are the operators'.
CREATE TABLE ops_app_limits (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    priority_min  smallint NOT NULL DEFAULT 0,
    priority_max  smallint NOT NULL DEFAULT 100,
    CHECK (priority_min <= priority_max)
);
INSERT INTO ops_app_limits DEFAULT VALUES;

-- The tenant bound to the session's login role, NULL when unbound.
-- SECURITY DEFINER: applications cannot read the binding table itself.
CREATE FUNCTION ops_session_tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM ops_tenant_roles WHERE role_name = session_user::text
$$;

-- Whatever an application's INSERT carries, its row starts as a new job of
-- its own tenant: queued, attempt 0, no lease, result or error, a priority
-- within the operators' band, and a payload bounded on its uncompressed size
-- (the table's CHECK measures the stored, compressed form, which let a 30 MB
-- compressible payload in). Column privileges already refuse most of these
-- columns to the app role; this trigger is the second wall, and the one that
-- fills in the tenant. sql/roles/roles.sql attaches it with a WHEN that only
-- application sessions match, so daemons and bulk loads pay nothing.
CREATE FUNCTION ops_jobs_app_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    lim ops_app_limits;
    size int;
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        RETURN NEW;   -- a DBA by hand: trusted as the table owner is
    END IF;
    NEW.tenant_id := ops_session_tenant();
    IF NEW.tenant_id IS NULL THEN
        RAISE EXCEPTION 'role % is bound to no tenant; an operator runs: opsrunner tenants bind % TENANT',
            session_user, session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO lim FROM ops_app_limits;
    NEW.priority := least(greatest(NEW.priority, lim.priority_min), lim.priority_max);
    size := octet_length(NEW.payload::text);
    IF size > 1048576 THEN
        RAISE EXCEPTION 'payload is % bytes; the limit is 1048576 (1 MiB)', size
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.status := 'queued';
    NEW.attempt := 0;
    NEW.lease_owner := NULL;
    NEW.lease_expires_at := NULL;
    NEW.result := NULL;
    NEW.error := NULL;
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.cancel_requested := false;
    NEW.cancel_requested_at := NULL;
    NEW.cancel_reason := NULL;
    NEW.created_at := now();
    NEW.updated_at := now();
    RETURN NEW;
END $$;

-- opsrunner roles and privileges. NOT an app migration: run it once per
-- database, after `opsrunner migrate`, as a superuser (or a role with
-- CREATEROLE that owns the opsrunner tables), and again after upgrades that
-- add tables:
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f sql/roles/roles.sql
--
-- It creates three group roles (NOLOGIN); give each daemon and application
-- its own LOGIN role and make it a member:
--
--   CREATE ROLE opsrunner_worker_vm1 LOGIN PASSWORD '...' IN ROLE opsrunner_worker;
--   CREATE ROLE opsrunner_api_vm1    LOGIN PASSWORD '...' IN ROLE opsrunner_api;
--   CREATE ROLE billing_app          LOGIN PASSWORD '...' IN ROLE opsrunner_app;
--   opsrunner tenants bind billing_app billing      -- the app's tenant
--
-- The owner (the role that ran `opsrunner migrate`) owns every object.
--
-- opsrunner_worker: the worker daemon and operator CLI. Sees every tenant's
--   rows through its own policy; no DDL (migrations run as the table owner).
-- opsrunner_api: the HTTP shim. Reads jobs (never their policy tokens) of
--   the tenant its request set with SET LOCAL app.tenant_id (row-level
--   security, forced); enqueues and cancels only through ops_api_enqueue()
--   and ops_api_cancel(), which write a new queued job or the cancellation
--   of one of that tenant's jobs and nothing else; reads API keys and flags;
--   appends to the audit log.
-- opsrunner_app: applications that enqueue by plain SQL. INSERT of the
--   columns an application decides; every row it inserts starts queued, in
--   the tenant its login role is bound to (ops_tenant_roles), with a priority
--   in the operators' band (ops_app_limits). It reads (without policy
--   tokens) and asks to cancel only its own tenant's jobs.
--
-- After this script the policy is FORCED: the table owner is bound by it too,
-- so run the worker and CLI as a member of opsrunner_worker (or grant the
-- owner that membership) rather than as a bare owner.

DO $$
BEGIN
    CREATE ROLE opsrunner_worker NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles are cluster-wide: another database's run made it
END $$;

DO $$
BEGIN
    CREATE ROLE opsrunner_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

DO $$
BEGIN
    CREATE ROLE opsrunner_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO opsrunner_worker, opsrunner_api, opsrunner_app',
                   current_database());
END $$;
GRANT USAGE ON SCHEMA public TO opsrunner_worker, opsrunner_api, opsrunner_app;

-- Worker and operators: data, not schema.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON ops_jobs, ops_job_events, ops_feature_flags, ops_api_keys
    TO opsrunner_worker;
GRANT SELECT, INSERT ON ops_audit_log TO opsrunner_worker;
GRANT SELECT ON ops_schema_migrations TO opsrunner_worker;
-- The worker runs an action job only when its token's recorded use is its own.
GRANT SELECT ON ops_policy_token_uses TO opsrunner_worker;
-- The leadership lease of the daemon that exports cluster-wide gauges.
GRANT SELECT, INSERT, UPDATE, DELETE ON ops_leaders TO opsrunner_worker;
-- Per-type concurrency limits: operators set them, claims lock them.
GRANT SELECT, INSERT, UPDATE, DELETE ON ops_type_limits TO opsrunner_worker;
-- `limits set --fair` builds the fair claim's index on first use (v16).
GRANT EXECUTE ON FUNCTION ops_ensure_fair_index() TO opsrunner_worker;
-- Cron schedules: operators edit them, the elected daemon advances them.
GRANT SELECT, INSERT, UPDATE, DELETE ON ops_schedules, ops_schedule_slots TO opsrunner_worker;
-- Operators bind application roles to tenants (`opsrunner tenants`).
GRANT SELECT, INSERT, UPDATE, DELETE ON ops_tenant_roles TO opsrunner_worker;
GRANT SELECT, UPDATE ON ops_app_limits TO opsrunner_worker;
-- Pruning runs as the owner (SECURITY DEFINER): the worker may only call it.
GRANT EXECUTE ON FUNCTION ops_prune(timestamptz, timestamptz, timestamptz, timestamptz, integer)
    TO opsrunner_worker;

-- The shim: read jobs (row-level security narrows it to one tenant), write
-- only through its two functions. Earlier versions of this script granted
-- INSERT, UPDATE and event INSERT: revoked here, so a re-run tightens an
-- existing database too.
REVOKE ALL ON ops_jobs, ops_job_events FROM opsrunner_api;
GRANT SELECT (id, job_type, queue, priority, status, payload, result, error, attempt,
              max_attempts, run_at, cancel_requested, cancel_requested_at, cancel_reason,
              idempotency_key, tenant_id, timeout, dry_run, created_at, updated_at,
              started_at, finished_at, lease_owner)
    ON ops_jobs TO opsrunner_api;
GRANT EXECUTE ON FUNCTION ops_api_enqueue(text, text, text, smallint, jsonb, integer, timestamptz,
                                          float8, text, text, boolean),
                          ops_api_cancel(text, uuid, text, text)
    TO opsrunner_api;
GRANT SELECT ON ops_api_keys, ops_feature_flags, ops_schema_migrations TO opsrunner_api;
GRANT INSERT ON ops_audit_log TO opsrunner_api;
-- Bulk retry and cancel, one tenant at a time for the shim (schema v14).
GRANT EXECUTE ON FUNCTION ops_bulk_batch(text, text, text, text, text, timestamptz, uuid, integer, text)
    TO opsrunner_api, opsrunner_worker;
-- The console: flag switches through their function, and the schedules and
-- audit pages (shown to operators' sessions only; schema v14).
GRANT EXECUTE ON FUNCTION ops_api_set_flag(text, boolean, text, text) TO opsrunner_api;
GRANT EXECUTE ON FUNCTION ops_api_retry(text, uuid, text) TO opsrunner_api;
GRANT EXECUTE ON FUNCTION ops_api_schedule_set_enabled(text, boolean, timestamptz, text),
                          ops_api_schedule_run_now(text, text) TO opsrunner_api;
GRANT SELECT ON ops_schedules, ops_schedule_slots, ops_audit_log TO opsrunner_api;
-- The operator console's sessions (schema v13).
GRANT SELECT, INSERT, UPDATE, DELETE ON ops_ui_sessions TO opsrunner_api;
-- The console's job page shows a job's transition trail: the shim reads the
-- events of the jobs it can see, and no others (the policy's subquery runs
-- under the shim's own view of ops_jobs, which is one tenant's).
GRANT SELECT ON ops_job_events TO opsrunner_api;
ALTER TABLE ops_job_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS ops_job_events_worker_all ON ops_job_events;
CREATE POLICY ops_job_events_worker_all ON ops_job_events TO opsrunner_worker
    USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS ops_job_events_api_visible ON ops_job_events;
CREATE POLICY ops_job_events_api_visible ON ops_job_events FOR SELECT TO opsrunner_api
    USING (EXISTS (SELECT 1 FROM ops_jobs j WHERE j.id = ops_job_events.job_id));
REVOKE EXECUTE ON FUNCTION ops_prune(timestamptz, timestamptz, timestamptz, timestamptz, integer)
    FROM PUBLIC;

-- The worker sees every tenant; the shim only the one it sets.
DROP POLICY IF EXISTS ops_jobs_worker_all ON ops_jobs;
CREATE POLICY ops_jobs_worker_all ON ops_jobs TO opsrunner_worker
    USING (true) WITH CHECK (true);
ALTER TABLE ops_jobs FORCE ROW LEVEL SECURITY;

-- Applications: insert only what an application decides, read and cancel
-- only their own tenant's jobs, never a policy token.
REVOKE ALL ON ops_jobs, ops_job_events FROM opsrunner_app;
GRANT INSERT (job_type, queue, priority, payload, max_attempts, run_at, timeout,
              idempotency_key, policy_token, dry_run)
    ON ops_jobs TO opsrunner_app;
GRANT SELECT (id, job_type, queue, priority, status, payload, result, error, attempt,
              max_attempts, run_at, cancel_requested, cancel_requested_at, cancel_reason,
              idempotency_key, tenant_id, timeout, dry_run, created_at, updated_at,
              started_at, finished_at)
    ON ops_jobs TO opsrunner_app;
GRANT UPDATE (cancel_requested, cancel_requested_at, cancel_reason) ON ops_jobs TO opsrunner_app;
GRANT SELECT ON ops_schema_migrations TO opsrunner_app;

DROP TRIGGER IF EXISTS ops_jobs_app_insert ON ops_jobs;
CREATE TRIGGER ops_jobs_app_insert BEFORE INSERT ON ops_jobs
    FOR EACH ROW WHEN (pg_has_role(session_user, 'opsrunner_app', 'MEMBER'))
    EXECUTE FUNCTION ops_jobs_app_insert();

-- An application sees its bound tenant's rows only. The shim's
-- per-transaction tenant setting applies to the shim alone: an application
-- that sets app.tenant_id itself gains nothing.
DROP POLICY IF EXISTS ops_jobs_app_tenant ON ops_jobs;
CREATE POLICY ops_jobs_app_tenant ON ops_jobs TO opsrunner_app
    USING (tenant_id = ops_session_tenant()) WITH CHECK (tenant_id = ops_session_tenant());
ALTER POLICY ops_jobs_tenant_isolation ON ops_jobs TO opsrunner_api;

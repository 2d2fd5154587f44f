-- opsrunner schema v9: every job has a tenant, the shim writes only through
-- functions that check it, and a policy token is used by one job only.

-- Every job has a tenant. Rows inserted by SQL or the CLI without one belong
-- to the default tenant, the one the shim's master key (api.tenant,
-- "default" unless configured) answers for: the psql line and the curl line
-- `opsrunner dev` prints are two doors to one queue. The backfill touches
-- only rows without a tenant; the triggers that would log transitions, send
-- wake-ups and bump updated_at for each of them are held off while it runs
-- (the ALTER below takes the table's exclusive lock anyway).
ALTER TABLE ops_jobs DISABLE TRIGGER ops_jobs_touch,
                     DISABLE TRIGGER ops_jobs_log_transitions,
                     DISABLE TRIGGER ops_jobs_notify_update;
UPDATE ops_jobs SET tenant_id = 'default' WHERE tenant_id IS NULL;
ALTER TABLE ops_jobs ENABLE TRIGGER ops_jobs_touch,
                     ENABLE TRIGGER ops_jobs_log_transitions,
                     ENABLE TRIGGER ops_jobs_notify_update;
ALTER TABLE ops_jobs ALTER COLUMN tenant_id SET DEFAULT 'default',
                     ALTER COLUMN tenant_id SET NOT NULL;

-- Transition events are written by the table's own trigger, as the owner:
-- callers (applications asking for a cancellation, the shim) need no INSERT
-- on ops_job_events, so none of them can forge an event for any job.
ALTER FUNCTION ops_jobs_log_transitions() SECURITY DEFINER SET search_path = public, pg_temp;

-- Policy tokens are single-use. The first insert of a row carrying a token
-- records the token's SHA-256 with that job's id, in the inserting
-- transaction; a second row with the same token is refused (whoever inserts
-- it: the shim, an application by SQL, a copy of an old row), and the worker
-- runs an action job only when the use recorded for its token is its own.
-- Signed tokens carry a random id, so two tokens never collide by accident.
-- Rows outlive their tokens by a day: no token is valid for more than 7 days.
CREATE TABLE ops_policy_token_uses (
    token_sha256 bytea PRIMARY KEY CHECK (octet_length(token_sha256) = 32),
    job_id       uuid NOT NULL,
    used_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ops_policy_token_uses_at_idx ON ops_policy_token_uses (used_at);

CREATE FUNCTION ops_jobs_consume_token() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    h bytea := sha256(convert_to(NEW.policy_token, 'UTF8'));
    prior uuid;
BEGIN
    INSERT INTO ops_policy_token_uses (token_sha256, job_id) VALUES (h, NEW.id)
    ON CONFLICT (token_sha256) DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    SELECT job_id INTO prior FROM ops_policy_token_uses WHERE token_sha256 = h;
    -- The same request repeated with its Idempotency-Key: skip the row, and
    -- the insert's conflict handling answers with the first job.
    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM ops_jobs j
        WHERE j.id = prior AND j.tenant_id = NEW.tenant_id
          AND j.idempotency_key = NEW.idempotency_key) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'this policy token was already used by job %; sign a new token for each job', prior
        USING ERRCODE = 'unique_violation', CONSTRAINT = 'ops_policy_token_uses_pkey';
END $$;

-- Runs after ops_jobs_app_insert (triggers fire in name order), so an
-- application's row already has its bound tenant.
CREATE TRIGGER ops_jobs_consume_token BEFORE INSERT ON ops_jobs
    FOR EACH ROW WHEN (NEW.policy_token IS NOT NULL)
    EXECUTE FUNCTION ops_jobs_consume_token();

-- Retention now also forgets token uses older than 8 days.
CREATE OR REPLACE FUNCTION ops_prune(succeeded_before timestamptz, failed_before timestamptz,
                          cancelled_before timestamptz, audit_before timestamptz, batch integer,
                          OUT jobs_deleted bigint, OUT events_deleted bigint, OUT audit_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM set_config('opsrunner.retention_prune', 'on', true);
    WITH doomed AS (
        SELECT id FROM ops_jobs
        WHERE status IN ('succeeded', 'failed', 'cancelled')
          -- The widest cutoff bounds the scan of ops_jobs_finished_idx.
          AND finished_at < greatest(succeeded_before, failed_before, cancelled_before)
          AND finished_at < CASE status WHEN 'succeeded' THEN succeeded_before
                                        WHEN 'failed' THEN failed_before
                                        ELSE cancelled_before END
        ORDER BY finished_at
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), ev AS (
        DELETE FROM ops_job_events e USING doomed WHERE e.job_id = doomed.id RETURNING 1
    ), jobs AS (
        DELETE FROM ops_jobs j USING doomed WHERE j.id = doomed.id RETURNING 1
    )
    SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM ev) INTO jobs_deleted, events_deleted;

    WITH old AS (
        SELECT id FROM ops_audit_log WHERE at < audit_before ORDER BY at LIMIT batch
    ), del AS (
        DELETE FROM ops_audit_log a USING old WHERE a.id = old.id RETURNING 1
    )
    SELECT count(*) FROM del INTO audit_deleted;

    DELETE FROM ops_policy_token_uses
    WHERE token_sha256 IN (SELECT token_sha256 FROM ops_policy_token_uses
                           WHERE used_at < now() - interval '8 days' LIMIT batch);
    PERFORM set_config('opsrunner.retention_prune', 'off', true);
END $$;

-- The shim's writes. Its role has no INSERT or UPDATE on ops_jobs: it
-- enqueues and cancels through these two functions, which take the tenant
-- its key authenticated, write only a new queued job or the cancellation
-- columns, and never touch another tenant's row. A compromised shim can
-- still name any tenant (it holds every tenant's keys' hashes anyway); what
-- these close is a query bug or a stolen shim login writing job states,
-- results or leases.
CREATE FUNCTION ops_api_enqueue(p_tenant text, p_job_type text, p_queue text, p_priority smallint,
                                p_payload jsonb, p_max_attempts integer, p_run_at timestamptz,
                                p_timeout_secs float8, p_idempotency_key text,
                                p_policy_token text, p_dry_run boolean)
RETURNS TABLE (job_id uuid, job_status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    size int;
BEGIN
    IF p_tenant IS NULL OR p_tenant = '' THEN
        RAISE EXCEPTION 'a tenant is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    size := octet_length(p_payload::text);
    IF size > 1048576 THEN
        RAISE EXCEPTION 'payload is % bytes; the limit is 1048576 (1 MiB)', size
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN QUERY
    INSERT INTO ops_jobs (job_type, queue, priority, payload, max_attempts, run_at, timeout,
                          tenant_id, idempotency_key, policy_token, dry_run)
    VALUES (p_job_type, p_queue, p_priority, p_payload, p_max_attempts, coalesce(p_run_at, now()),
            CASE WHEN p_timeout_secs IS NULL THEN NULL ELSE make_interval(secs => p_timeout_secs) END,
            p_tenant, p_idempotency_key, p_policy_token, coalesce(p_dry_run, false))
    ON CONFLICT (coalesce(tenant_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING id, status::text;
END $$;

-- Cancel one job of one tenant and audit it, as api/cancel_job.sql does for
-- operators. NULL when the tenant has no such job or it already finished.
CREATE FUNCTION ops_api_cancel(p_tenant text, p_id uuid, p_reason text, p_actor text)
RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH req AS (
        UPDATE ops_jobs
        SET cancel_requested = true,
            cancel_requested_at = coalesce(cancel_requested_at, now()),
            cancel_reason = coalesce(p_reason, cancel_reason),
            status = CASE WHEN status = 'queued' THEN 'cancelled'::ops_job_status ELSE status END,
            error = CASE WHEN status = 'queued'
                         THEN left('cancelled before start' || coalesce(': ' || p_reason, ''), 500)
                         ELSE error END,
            finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
        WHERE id = p_id AND tenant_id = p_tenant AND status IN ('queued', 'running')
        RETURNING id, status, tenant_id
    ), audit AS (
        INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
        SELECT p_actor, 'job.cancel', req.id::text, req.tenant_id,
               jsonb_build_object('reason', p_reason, 'status', req.status, 'via', 'api')
        FROM req
    )
    SELECT status::text FROM req
$$;

-- Functions are executable by PUBLIC unless revoked; sql/roles/roles.sql
-- grants these to opsrunner_api alone.
REVOKE EXECUTE ON FUNCTION ops_api_enqueue(text, text, text, smallint, jsonb, integer, timestamptz,
                                           float8, text, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ops_api_cancel(text, uuid, text, text) FROM PUBLIC;

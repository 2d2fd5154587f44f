-- opsrunner schema v14: bulk retry and cancel, and the scopes the console
-- writes need.
--
-- ops_bulk_batch() is the one implementation of "retry (or cancel) the jobs
-- matching a filter", used by the CLI, the shim's API and the console: it
-- handles one batch (at most p_limit rows, oldest id first after p_after,
-- rows locked by someone else skipped) and returns the ids it changed, so a
-- million matching rows are changed in a million/p_limit short transactions,
-- never in one. The caller loops and writes one audit row with the filter
-- and the count. SECURITY DEFINER, because the shim's role may not update
-- jobs: it can only act on one tenant's jobs (a NULL tenant, every tenant,
-- is refused unless the session's login is an operator: a member of
-- opsrunner_worker, or the owner).
--
-- Retry puts failed or cancelled jobs back as new (as shared/retry_job.sql
-- does for one); cancel cancels queued jobs and flags running ones (as
-- shared/cancel_job.sql). Transition events come from the usual trigger.

ALTER TABLE ops_api_keys DROP CONSTRAINT ops_api_keys_scopes_check;
ALTER TABLE ops_api_keys ADD CONSTRAINT ops_api_keys_scopes_check
    CHECK (cardinality(scopes) >= 1
           AND scopes <@ ARRAY['jobs:read', 'jobs:write', 'jobs:cancel', 'jobs:retry', 'flags:write',
                                'admin']::text[]);

-- The console's flag switch: the shim's role may not write flags itself.
-- (Who may is decided by the shim: the flags:write scope, in the operators'
-- tenant, api.tenant.) Audited like `opsrunner flags`.
CREATE FUNCTION ops_api_set_flag(p_name text, p_enabled boolean, p_reason text, p_by text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH flag AS (
        INSERT INTO ops_feature_flags (name, enabled, reason, updated_by, updated_at)
        VALUES (p_name, p_enabled, left(p_reason, 500), left(p_by, 200), now())
        ON CONFLICT (name) DO UPDATE
        SET enabled = EXCLUDED.enabled, reason = EXCLUDED.reason,
            updated_by = EXCLUDED.updated_by, updated_at = now()
        RETURNING name
    )
    INSERT INTO ops_audit_log (actor, action, target, detail)
    SELECT p_by, CASE WHEN p_enabled THEN 'flag.enable' ELSE 'flag.disable' END, name,
           jsonb_build_object('reason', p_reason, 'via', 'ui')
    FROM flag
$$;
REVOKE EXECUTE ON FUNCTION ops_api_set_flag(text, boolean, text, text) FROM PUBLIC;

-- The console's Retry button: one failed or cancelled job of one tenant
-- back to the queue as new (as shared/retry_job.sql does for operators),
-- audited. NULL when the job is not that tenant's, or not retryable.
CREATE FUNCTION ops_api_retry(p_tenant text, p_id uuid, p_actor text)
RETURNS uuid
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH req AS (
        UPDATE ops_jobs
        SET status = 'queued', attempt = 0, run_at = now(), result = NULL, error = NULL,
            cancel_requested = false, cancel_requested_at = NULL, cancel_reason = NULL,
            lease_owner = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL
        WHERE id = p_id AND tenant_id = p_tenant AND status IN ('failed', 'cancelled')
        RETURNING id, tenant_id
    ), audit AS (
        INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
        SELECT p_actor, 'job.retry', req.id::text, req.tenant_id, jsonb_build_object('via', 'ui')
        FROM req
    )
    SELECT id FROM req
$$;
REVOKE EXECUTE ON FUNCTION ops_api_retry(text, uuid, text) FROM PUBLIC;

-- The console's schedule buttons (admin sessions): enable/disable a
-- CLI-made schedule (re-enabling starts at p_next_slot, computed by the
-- shim from the expression), and run one extra job now. Audited like
-- `opsrunner schedules`. NULL / false when there is no such CLI schedule.
CREATE FUNCTION ops_api_schedule_set_enabled(p_name text, p_enabled boolean,
                                             p_next_slot timestamptz, p_by text)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH s AS (
        UPDATE ops_schedules
        SET enabled = p_enabled, updated_at = now(), updated_by = left(p_by, 200),
            next_slot = CASE WHEN p_enabled AND NOT enabled THEN p_next_slot ELSE next_slot END
        WHERE name = p_name AND source = 'cli'
        RETURNING name
    ), audit AS (
        INSERT INTO ops_audit_log (actor, action, target, detail)
        SELECT p_by, CASE WHEN p_enabled THEN 'schedule.enable' ELSE 'schedule.disable' END,
               name, jsonb_build_object('via', 'ui')
        FROM s
    )
    SELECT EXISTS (SELECT 1 FROM s)
$$;
REVOKE EXECUTE ON FUNCTION ops_api_schedule_set_enabled(text, boolean, timestamptz, text) FROM PUBLIC;

CREATE FUNCTION ops_api_schedule_run_now(p_name text, p_by text)
RETURNS uuid
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH job AS (
        INSERT INTO ops_jobs (job_type, queue, priority, payload, max_attempts, timeout,
                              idempotency_key)
        SELECT job_type, queue, priority, payload, max_attempts, timeout,
               'schedule:' || name || ':run-now:' || gen_random_uuid()
        FROM ops_schedules WHERE name = p_name
        RETURNING id
    ), slot AS (
        INSERT INTO ops_schedule_slots (schedule, slot, outcome, job_id)
        SELECT p_name, now(), 'run_now', id FROM job
        ON CONFLICT (schedule, slot) DO NOTHING
    ), audit AS (
        INSERT INTO ops_audit_log (actor, action, target, detail)
        SELECT p_by, 'schedule.run_now', p_name, jsonb_build_object('job_id', id, 'via', 'ui')
        FROM job
    )
    SELECT id FROM job
$$;
REVOKE EXECUTE ON FUNCTION ops_api_schedule_run_now(text, text) FROM PUBLIC;

CREATE FUNCTION ops_bulk_batch(p_action text, p_tenant text, p_status text, p_job_type text,
                               p_queue text, p_since timestamptz, p_after uuid, p_limit integer,
                               p_reason text)
RETURNS TABLE (id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_tenant IS NULL
       AND NOT pg_has_role(session_user, 'opsrunner_worker', 'MEMBER')
       AND session_user <> (SELECT tableowner FROM pg_tables WHERE tablename = 'ops_jobs'
                            AND schemaname = 'public') THEN
        RAISE EXCEPTION 'bulk changes across tenants are for operators (members of opsrunner_worker)'
            USING ERRCODE = '42501';
    END IF;
    IF p_action NOT IN ('retry', 'cancel') THEN
        RAISE EXCEPTION 'unknown bulk action %', p_action USING ERRCODE = '22023';
    END IF;
    IF p_action = 'retry' AND p_status NOT IN ('failed', 'cancelled') THEN
        RAISE EXCEPTION 'retry applies to failed or cancelled jobs, not %', p_status USING ERRCODE = '22023';
    END IF;
    IF p_action = 'cancel' AND p_status NOT IN ('queued', 'running') THEN
        RAISE EXCEPTION 'cancel applies to queued or running jobs, not %', p_status USING ERRCODE = '22023';
    END IF;
    IF p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch size % is outside 1..10000', p_limit USING ERRCODE = '22023';
    END IF;
    IF p_action = 'retry' THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM ops_jobs j
            WHERE j.status = p_status::ops_job_status
              AND (p_tenant IS NULL OR j.tenant_id = p_tenant)
              AND (p_job_type IS NULL OR j.job_type = p_job_type)
              AND (p_queue IS NULL OR j.queue = p_queue)
              AND (p_since IS NULL OR coalesce(j.finished_at, j.created_at) >= p_since)
              AND (p_after IS NULL OR j.id > p_after)
            ORDER BY j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        )
        UPDATE ops_jobs AS j
        SET status = 'queued', attempt = 0, run_at = now(), result = NULL, error = NULL,
            cancel_requested = false, cancel_requested_at = NULL, cancel_reason = NULL,
            lease_owner = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL
        FROM picked WHERE j.id = picked.id
        RETURNING j.id;
    ELSE
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM ops_jobs j
            WHERE j.status = p_status::ops_job_status
              AND (p_tenant IS NULL OR j.tenant_id = p_tenant)
              AND (p_job_type IS NULL OR j.job_type = p_job_type)
              AND (p_queue IS NULL OR j.queue = p_queue)
              AND (p_since IS NULL OR j.created_at >= p_since)
              AND (p_after IS NULL OR j.id > p_after)
            ORDER BY j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        )
        UPDATE ops_jobs AS j
        SET cancel_requested = true,
            cancel_requested_at = coalesce(j.cancel_requested_at, now()),
            cancel_reason = coalesce(p_reason, j.cancel_reason),
            status = CASE WHEN j.status = 'queued' THEN 'cancelled'::ops_job_status ELSE j.status END,
            error = CASE WHEN j.status = 'queued'
                         THEN left('cancelled before start' || coalesce(': ' || p_reason, ''), 500)
                         ELSE j.error END,
            finished_at = CASE WHEN j.status = 'queued' THEN now() ELSE j.finished_at END
        FROM picked WHERE j.id = picked.id
        RETURNING j.id;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION ops_bulk_batch(text, text, text, text, text, timestamptz, uuid, integer, text)
    FROM PUBLIC;

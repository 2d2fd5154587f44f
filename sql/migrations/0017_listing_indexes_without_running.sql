-- opsrunner schema v17: a job's running version adds no entry to the two
-- listing indexes.
--
-- Every status change is a non-HOT update (status is indexed), so each of a
-- job's three row versions (queued, running, finished) added an entry to
-- every index on ops_jobs: twelve insertions per job, the largest block of
-- the server's work per job (docs/benchmarks.md). The (status, created_at)
-- and (job_type, created_at) indexes now leave out running rows. Running
-- rows are at most the fleet's slots and the running index holds them all,
-- so a listing that wants them reads that index and sorts a few thousand
-- rows at most. Measured with the server-only claim+complete loop
-- (benches/pgbench, 300,000 jobs, 2 clients x 100-row batches): 29,500 ->
-- 33,100 jobs/s (medians of 5 and 7 runs).
--
-- A listing must name `status <> 'running'` (or a status other than
-- running as a constant) for the planner to prove the partial index
-- applies: sql/queries/shared/list_jobs.sql, api/list_jobs.sql,
-- ui/jobs_page.sql and shared/bulk_count.sql do; ops_bulk_batch below does.
--
-- Upgrading rebuilds the two indexes under a lock that makes inserts wait
-- (docs/runbook.md gives the time per million rows).
DROP INDEX ops_jobs_status_created_idx;
CREATE INDEX ops_jobs_status_created_idx ON ops_jobs (status, created_at DESC)
    WHERE status <> 'running';
DROP INDEX ops_jobs_type_created_idx;
CREATE INDEX ops_jobs_type_created_idx ON ops_jobs (job_type, created_at DESC)
    WHERE status <> 'running';

CREATE OR REPLACE FUNCTION ops_bulk_batch(p_action text, p_tenant text, p_status text, p_job_type text,
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
              -- Always true here (failed or cancelled), and written out so
              -- that the partial (status, created_at) index can serve.
              AND j.status <> 'running'
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
              -- One of the two is always true; written out so that a custom
              -- plan sees which partial index serves (queued: the seed
              -- index, running: the running index).
              AND (p_status = 'running' OR j.status <> 'running')
              AND (p_status <> 'running' OR j.status = 'running')
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

-- opsrunner schema v3: retention pruning.
--
-- ops_audit_log refuses DELETE except inside ops_prune(), which marks its own
-- transaction. This stops accidental or ad-hoc deletes; it does not stop the
-- table owner, so grant the application roles no EXECUTE on ops_prune and
-- no ownership (see docs/security.md once roles land).

CREATE OR REPLACE FUNCTION ops_audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('opsrunner.retention_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'ops_audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Deletes at most `batch` finished jobs older than `jobs_before` (with their
-- events) and at most `batch` audit rows older than `audit_before`. Queued and
-- running jobs are never pruned, however old. Returns the counts.
CREATE FUNCTION ops_prune(jobs_before timestamptz, audit_before timestamptz, batch integer,
                          OUT jobs_deleted bigint, OUT events_deleted bigint, OUT audit_deleted bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('opsrunner.retention_prune', 'on', true);
    WITH doomed AS (
        SELECT id FROM ops_jobs
        WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < jobs_before
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
    PERFORM set_config('opsrunner.retention_prune', 'off', true);
END $$;

-- Serves the pruner: finished jobs by age.
CREATE INDEX ops_jobs_finished_idx ON ops_jobs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

-- opsrunner schema v7: retention that runs under the production roles, with
-- a cutoff per final status.
--
-- ops_prune() now runs as its owner (SECURITY DEFINER, search_path pinned):
-- the worker's role may EXECUTE it but has no DELETE on the append-only
-- audit log, so an invoker's function failed every pass with 42501 and
-- rolled the job pruning back with it. The audit log's trigger still refuses
-- every DELETE outside this function.
DROP FUNCTION IF EXISTS ops_prune(timestamptz, timestamptz, integer);

CREATE FUNCTION ops_prune(succeeded_before timestamptz, failed_before timestamptz,
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
    PERFORM set_config('opsrunner.retention_prune', 'off', true);
END $$;

REVOKE EXECUTE ON FUNCTION ops_prune(timestamptz, timestamptz, timestamptz, timestamptz, integer)
    FROM PUBLIC;

-- sql/roles/roles.sql forces row-level security, which binds the owner too:
-- the function, running as the owner, must see every row to prune it.
CREATE POLICY ops_jobs_owner_all ON ops_jobs TO CURRENT_USER USING (true) WITH CHECK (true);

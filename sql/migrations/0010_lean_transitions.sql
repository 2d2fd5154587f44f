-- opsrunner schema v10: a job's happy path writes no event rows, and no
-- trigger copies the rows a claim or a completion changes.
--
-- Until v9 every claim and completion fired two statement triggers with
-- transition tables: Postgres copied each changed row (old and new, payload
-- included) into two tuple stores, and the event trigger wrote two
-- ops_job_events rows per job (queued -> running, running -> succeeded),
-- each with its index entries. A job's row already shows those two steps:
-- started_at is when its attempt began, finished_at when it succeeded. So:
--
-- - an event row is written only for what a row cannot show afterwards:
--   failures, cancellations, retries and rescues (back to queued), operator
--   retries, and any other change made by SQL; the attempt's start time is
--   kept on the event (attempt_started_at), so `jobs show` rebuilds every
--   attempt, the happy steps included, from the row and its events
--   (shared/job_events.sql);
-- - the triggers are row triggers whose WHEN is evaluated by the executor
--   for each changed row, before any function call: a claim or a success
--   matches none of them and costs no function call and no copy.
--
-- Measured with `opsrunner bench` (docs/benchmarks.md, "Per-job cost").

ALTER TABLE ops_job_events ADD COLUMN attempt_started_at timestamptz;

DROP TRIGGER ops_jobs_log_transitions ON ops_jobs;
DROP FUNCTION ops_jobs_log_transitions();
CREATE FUNCTION ops_jobs_log_transition() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO ops_job_events (job_id, from_status, to_status, attempt, worker, detail,
                                attempt_started_at)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.attempt, NEW.lease_owner,
            CASE WHEN NEW.status IN ('failed', 'queued', 'cancelled') THEN left(NEW.error, 500) END,
            CASE WHEN OLD.status = 'running' THEN OLD.started_at END);
    RETURN NULL;
END $$;
CREATE TRIGGER ops_jobs_log_transitions AFTER UPDATE ON ops_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status <> 'succeeded'
          AND NOT (OLD.status = 'queued' AND NEW.status = 'running'))
    EXECUTE FUNCTION ops_jobs_log_transition();

-- Wake-ups: a cancellation requested, or a job put back into the queue and
-- due now. pg_notify folds repeats within a transaction into one.
DROP TRIGGER ops_jobs_notify_update ON ops_jobs;
DROP FUNCTION ops_jobs_notify_update();
CREATE FUNCTION ops_jobs_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ops_jobs_cancel', '');
    RETURN NULL;
END $$;
CREATE TRIGGER ops_jobs_notify_cancel AFTER UPDATE ON ops_jobs
    FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)
    EXECUTE FUNCTION ops_jobs_notify_cancel();
CREATE TRIGGER ops_jobs_notify_requeue AFTER UPDATE ON ops_jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued' AND NEW.run_at <= now())
    EXECUTE FUNCTION ops_jobs_notify_insert();

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

-- Time-ordered job ids (UUIDv7: 48 bits of Unix milliseconds, then random
-- bits): a new row's primary-key entry lands at the right edge of the index
-- instead of on a random leaf, so inserts touch a few hot pages rather than
-- the whole index, and the events' job_id index grows the same way. The
-- daemon, the CLI and the library make their ids themselves (the `uuid`
-- crate's v7); this default serves plain-SQL inserts. Ids stay UUIDs, so
-- nothing that reads them changes. Measured by the server-only loop
-- (benches/pgbench): claim and complete 311-322 -> 335-355 batches/s.
-- PostgreSQL 17 has no uuidv7() yet, 18 does; this is the same layout.
CREATE FUNCTION ops_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
ALTER TABLE ops_jobs ALTER COLUMN id SET DEFAULT ops_uuid_v7();

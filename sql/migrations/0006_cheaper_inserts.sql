-- opsrunner schema v6: cheaper inserts and row versions (measured with
-- `opsrunner bench`, see docs/benchmarks.md).
--
-- 0005 declared ops_valid_name() STRICT. A STRICT SQL function is only
-- inlined when the planner can prove its body is NULL for a NULL argument,
-- and an AND of tests is not, so every CHECK ran it as a real function call:
-- about 2 µs per call, two calls per row version, three row versions per job
-- (more than the regular expression it replaced). Without STRICT the body is
-- inlined into the constraint. The body is also cheaper: the length test
-- plus an unbounded regular expression (about 0.3 µs) beats both ltrim over
-- a character set and the original `{0,63}`, whose bounded repetition is
-- what made the regex slow. Same rule: [a-z][a-z0-9_.-]{0,63}; `$` matches
-- only at the very end of the string. The answer for a NULL name is NULL
-- either way, which a CHECK accepts; the columns are NOT NULL anyway. The
-- constraints keep referring to the same function, so nothing is
-- re-validated.
CREATE OR REPLACE FUNCTION ops_valid_name(n text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT octet_length(n) BETWEEN 1 AND 64 AND n ~ '^[a-z][a-z0-9_.-]*$'
$$;

-- The claim index, rebuilt for two reasons found by measuring:
-- - It ended in `id` to make the claim order total. With random UUIDs that
--   bought no fairness (ids are not in insertion order) but sent every
--   insert to a random place in the index: rows inserted together share
--   priority and run_at, so the id alone decided where each entry went.
--   Without it, equal keys are deduplicated; a batched INSERT of 100,000
--   rows is about a quarter faster. Ties in (priority, run_at) are taken in
--   index order.
-- - It led with (priority, run_at), so a claim walked every queued row in
--   that order and filtered the job type on the heap row. A backlog of a
--   disabled type at the head of the queue was stepped over on every claim
--   (3,500 instead of 25,000 jobs/s with 200,000 such rows), and without
--   fresh statistics the planner sorted every queued row on each claim
--   instead (1,100 jobs/s right after a bulk load). Leading with job_type,
--   the claim (sql/queries/claim.sql) takes the first rows of each enabled
--   type from its own range of the index and merges them: the work per claim
--   no longer depends on the backlog or on the statistics.
-- Built before the old one is dropped so that claims always have an index.
CREATE INDEX ops_jobs_claim2_idx ON ops_jobs (job_type, priority, run_at) WHERE status = 'queued';
DROP INDEX ops_jobs_claim_idx;
ALTER INDEX ops_jobs_claim2_idx RENAME TO ops_jobs_claim_idx;

-- Events are appended in time order and only ever looked up by job (the
-- (job_id, id) index) or scanned by time range: a BRIN index serves the
-- latter at a fraction of a btree's cost per insert (two events per job).
DROP INDEX ops_job_events_at_idx;
CREATE INDEX ops_job_events_at_idx ON ops_job_events USING brin (at);

-- The wake-up trigger runs after every claim and completion. Both of its
-- conditions need a row that is cancel-requested, or queued and due, in the
-- new rows, which claims and completions almost never have: check that cheap
-- scan first and join the old rows only when it finds one.
CREATE OR REPLACE FUNCTION ops_jobs_notify_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows WHERE cancel_requested)
       AND EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE n.cancel_requested AND NOT o.cancel_requested) THEN
        PERFORM pg_notify('ops_jobs_cancel', '');
    END IF;
    IF EXISTS (SELECT 1 FROM new_rows WHERE status = 'queued' AND run_at <= now())
       AND EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE n.status = 'queued' AND o.status <> 'queued' AND n.run_at <= now()) THEN
        PERFORM pg_notify('ops_jobs', '');
    END IF;
    RETURN NULL;
END $$;

-- Heartbeats rewrite every running row every few seconds. An update can be
-- HOT (new version on the same page, no new index entries) only when it
-- changes no indexed column, and the lease index was keyed on the very
-- column a heartbeat renews: every renewal added an entry to every index on
-- the table. Keyed on lease_owner instead (fixed for an attempt), a renewal
-- touches no index, and the fillfactor's free space lets it stay on its page
-- (measured: 0 % of renewals HOT before, about 80 % after, in a tight loop
-- with no vacuum). The rescuer reads every running row's lease through this
-- index; running rows are bounded by the slots of all workers, so that stays
-- small (0.5 ms for 1,000 running rows among 300,000).
DROP INDEX ops_jobs_running_lease_idx;
CREATE INDEX ops_jobs_running_idx ON ops_jobs (lease_owner) WHERE status = 'running';

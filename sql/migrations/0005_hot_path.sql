-- opsrunner schema v5: fewer cycles per job on the hot path (measured with
-- `opsrunner bench`, see docs/benchmarks.md).
--
-- updated_at: the daemon's own statements (claim, heartbeat, completion) set
-- it themselves; the per-row PL/pgSQL trigger now fires only for updates that
-- did not (plain SQL from apps and operators), so updated_at stays maintained
-- for everyone without a function call per row on the hot path.
DROP TRIGGER ops_jobs_touch ON ops_jobs;
CREATE TRIGGER ops_jobs_touch BEFORE UPDATE ON ops_jobs
    FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION ops_jobs_touch();

-- A queue table churns: every job leaves two dead row versions and dead
-- entries in the claim index, which each claim must step over until vacuum
-- removes them. Vacuum it after 2% of its rows changed, not the default 20%,
-- and without cost-based sleeping.
ALTER TABLE ops_jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- CHECK constraints are evaluated for every new row version, so a claim and
-- a completion re-check the name formats and the payload size each time. The
-- same rules, cheaper: no regular expression, and the payload is rendered to
-- text only when its binary form is large.
ALTER TABLE ops_jobs
    DROP CONSTRAINT ops_jobs_job_type_check,
    DROP CONSTRAINT ops_jobs_queue_check,
    DROP CONSTRAINT ops_jobs_payload_check;
-- [a-z][a-z0-9_.-]{0,63}, spelled without a regex.
CREATE FUNCTION ops_valid_name(n text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT octet_length(n) BETWEEN 1 AND 64
       AND ascii(n) BETWEEN 97 AND 122
       AND ltrim(n, 'abcdefghijklmnopqrstuvwxyz0123456789_.-') = ''
$$;
ALTER TABLE ops_jobs
    ADD CONSTRAINT ops_jobs_job_type_check CHECK (ops_valid_name(job_type)) NOT VALID,
    ADD CONSTRAINT ops_jobs_queue_check CHECK (ops_valid_name(queue)) NOT VALID,
    ADD CONSTRAINT ops_jobs_payload_check
        CHECK (pg_column_size(payload) <= 1048576 OR octet_length(payload::text) <= 1048576) NOT VALID;
-- Existing rows met the stricter old rules; validating takes no write lock.
ALTER TABLE ops_jobs VALIDATE CONSTRAINT ops_jobs_job_type_check;
ALTER TABLE ops_jobs VALIDATE CONSTRAINT ops_jobs_queue_check;
ALTER TABLE ops_jobs VALIDATE CONSTRAINT ops_jobs_payload_check;

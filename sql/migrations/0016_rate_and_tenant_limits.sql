-- opsrunner schema v16: rate limits and per-tenant limits per job type, and
-- fair (round-robin) claiming across tenants, all across every daemon.
--
-- A type's limit row now carries up to four rules, any of them optional:
-- max_running (v15), at most rate_limit jobs started per rate_period (one
-- second or one minute), at most per_tenant_max_running running per tenant,
-- and fair claiming. The claim of a limited type locks the row (v15), so
-- the rate window and the round-robin position kept in the row are updated
-- by one daemon at a time. Those two are state, not settings: the NOTIFY
-- that makes every daemon reload fires only when a setting changes.
ALTER TABLE ops_type_limits
    ALTER COLUMN max_running DROP NOT NULL,
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    ADD COLUMN rate_period interval CHECK (rate_period IN ('1 second', '1 minute')),
    ADD COLUMN per_tenant_max_running integer CHECK (per_tenant_max_running BETWEEN 1 AND 100000),
    -- Round-robin across tenants (implied by per_tenant_max_running).
    ADD COLUMN fair boolean NOT NULL DEFAULT false,
    -- The rate window (sliding-window counter): jobs started in the window
    -- that began at rate_window_start, and in the window before it.
    ADD COLUMN rate_window_start timestamptz,
    ADD COLUMN rate_window_count integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_previous_count integer NOT NULL DEFAULT 0,
    -- The tenant served last by a fair claim:
    -- the next fair claim starts after it.
    ADD COLUMN fair_after text,
    ADD CONSTRAINT ops_type_limits_rate_check CHECK ((rate_limit IS NULL) = (rate_period IS NULL)),
    ADD CONSTRAINT ops_type_limits_some_rule CHECK (
        max_running IS NOT NULL OR rate_limit IS NOT NULL
        OR per_tenant_max_running IS NOT NULL OR fair);

DROP TRIGGER ops_type_limits_notify ON ops_type_limits;
CREATE TRIGGER ops_type_limits_notify
    AFTER INSERT OR DELETE
       OR UPDATE OF job_type, max_running, rate_limit, rate_period, per_tenant_max_running, fair
    ON ops_type_limits
    FOR EACH STATEMENT EXECUTE FUNCTION ops_type_limits_notify();

-- A fair claim walks the tenants with queued jobs of its type (a skip scan:
-- one probe per tenant) and takes each one's best jobs in (priority,
-- run_at) order, from this index over the queued rows. It costs every
-- enqueue one more index entry (measured: batched INSERT 80k -> 65k rows/s,
-- COPY 100k -> 68k on the bench machine), so it is built only when a type
-- first gets a fair or per-tenant rule: `opsrunner limits set` calls this
-- as the operator, and the function builds it as the table's owner. A
-- plain build, not CONCURRENTLY (which cannot run in a function): inserts
-- wait for it, about 3 s per million queued rows on the bench machine. True when it built.
CREATE FUNCTION ops_ensure_fair_index() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF to_regclass('public.ops_jobs_tenant_claim_idx') IS NOT NULL THEN
        RETURN false;
    END IF;
    CREATE INDEX ops_jobs_tenant_claim_idx
        ON ops_jobs (job_type, tenant_id, priority, run_at)
        WHERE status = 'queued';
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION ops_ensure_fair_index() FROM PUBLIC;

-- opsrunner schema v15: a concurrency limit per job type, across every
-- daemon: at most max_running jobs of the type run at once, wherever they
-- run.
--
-- Enforced in the claim, not by counting in one process: a claim of a
-- limited type first locks the type's row here (so claims of that type
-- take turns across daemons), then, in a fresh statement that sees every
-- committed claim, counts the type's running jobs and claims at most the
-- difference. A limit reached leaves the jobs queued. Changes are
-- announced on the flags channel, so every daemon reloads them within a
-- second, like a flag.
CREATE TABLE ops_type_limits (
    job_type    text PRIMARY KEY CHECK (ops_valid_name(job_type)),
    max_running integer NOT NULL CHECK (max_running BETWEEN 1 AND 100000),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT current_user CHECK (char_length(updated_by) <= 200)
);

CREATE FUNCTION ops_type_limits_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ops_flags', 'limits');
    RETURN NULL;
END
$$;

CREATE TRIGGER ops_type_limits_notify AFTER INSERT OR UPDATE OR DELETE ON ops_type_limits
    FOR EACH STATEMENT EXECUTE FUNCTION ops_type_limits_notify();

-- opsrunner schema v1: jobs, transition events, feature flags, NOTIFY triggers.
-- Applied by `opsrunner migrate` inside one transaction; never by the daemon.

CREATE TYPE ops_job_status AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE ops_jobs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Apps insert with plain SQL and bypass every application-level check, so
    -- the table itself bounds what a row may contain.
    job_type            text NOT NULL CHECK (job_type ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    queue               text NOT NULL DEFAULT 'default' CHECK (queue ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    priority            smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    status              ops_job_status NOT NULL DEFAULT 'queued',
    payload             jsonb NOT NULL DEFAULT '{}'::jsonb
                        CHECK (octet_length(payload::text) <= 1048576),
    -- The worker writes at most 10 KB of result (serialized compactly); Postgres
    -- renders jsonb with extra spaces, so the backstop leaves room for that.
    result              jsonb CHECK (result IS NULL OR octet_length(result::text) <= 20480),
    error               text CHECK (char_length(error) <= 500),
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    run_at              timestamptz NOT NULL DEFAULT now(),
    cancel_requested    boolean NOT NULL DEFAULT false,
    cancel_requested_at timestamptz,
    lease_owner         text,
    lease_expires_at    timestamptz,
    idempotency_key     text CHECK (char_length(idempotency_key) <= 200),
    tenant_id           text CHECK (char_length(tenant_id) <= 200),
    timeout             interval CHECK (timeout > interval '0' AND timeout <= interval '1 day'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz
) WITH (fillfactor = 85);  -- leave room on each page so status updates can stay on-page

CREATE INDEX ops_jobs_status_created_idx ON ops_jobs (status, created_at DESC);
CREATE INDEX ops_jobs_type_created_idx ON ops_jobs (job_type, created_at DESC);
-- Serves the claim query: only queued rows, in claim order.
CREATE INDEX ops_jobs_claim_idx ON ops_jobs (priority, run_at, id) WHERE status = 'queued';
-- Serves the heartbeat and the rescuer: running rows are few.
CREATE INDEX ops_jobs_running_lease_idx ON ops_jobs (lease_expires_at) WHERE status = 'running';
CREATE UNIQUE INDEX ops_jobs_idempotency_idx ON ops_jobs (coalesce(tenant_id, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE FUNCTION ops_jobs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER ops_jobs_touch BEFORE UPDATE ON ops_jobs
    FOR EACH ROW EXECUTE FUNCTION ops_jobs_touch();

-- Append-only history of status transitions, written by a statement-level
-- trigger so that transitions made by plain SQL are recorded too.
CREATE TABLE ops_job_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid NOT NULL,
    from_status ops_job_status,
    to_status   ops_job_status NOT NULL,
    attempt     integer NOT NULL,
    worker      text,
    detail      text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ops_job_events_job_idx ON ops_job_events (job_id, id);
CREATE INDEX ops_job_events_at_idx ON ops_job_events (at);

CREATE FUNCTION ops_jobs_log_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ops_job_events (job_id, from_status, to_status, attempt, worker, detail)
    SELECT n.id, o.status, n.status, n.attempt, n.lease_owner,
           CASE WHEN n.status IN ('failed', 'queued', 'cancelled') THEN left(n.error, 500) END
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status;
    RETURN NULL;
END $$;

CREATE TRIGGER ops_jobs_log_transitions AFTER UPDATE ON ops_jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ops_jobs_log_transitions();

-- One notification per statement (a bulk INSERT of 10,000 rows sends one).
-- The payload is empty: a notification is only a wake-up, the claim query is
-- the source of truth.
CREATE FUNCTION ops_jobs_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ops_jobs', '');
    RETURN NULL;
END $$;

CREATE TRIGGER ops_jobs_notify_insert AFTER INSERT ON ops_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ops_jobs_notify_insert();

-- Cancellation requests and jobs put back into the queue (retry via SQL) wake
-- workers too, again once per statement and only when such a row changed.
CREATE FUNCTION ops_jobs_notify_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.cancel_requested AND NOT o.cancel_requested) THEN
        PERFORM pg_notify('ops_jobs_cancel', '');
    END IF;
    IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.status = 'queued' AND o.status <> 'queued' AND n.run_at <= now()) THEN
        PERFORM pg_notify('ops_jobs', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ops_jobs_notify_update AFTER UPDATE ON ops_jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ops_jobs_notify_update();

-- Feature flags: an absent flag is OFF.
CREATE TABLE ops_feature_flags (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    enabled    boolean NOT NULL DEFAULT false,
    reason     text CHECK (char_length(reason) <= 500),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text CHECK (char_length(updated_by) <= 200)
);

CREATE FUNCTION ops_feature_flags_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ops_flags', '');
    RETURN NULL;
END $$;

CREATE TRIGGER ops_feature_flags_notify AFTER INSERT OR UPDATE OR DELETE ON ops_feature_flags
    FOR EACH STATEMENT EXECUTE FUNCTION ops_feature_flags_notify();

-- Serves the sweep that cancels queued jobs whose cancellation was requested;
-- such rows are rare, so the index stays tiny.
CREATE INDEX ops_jobs_cancel_queued_idx ON ops_jobs (id) WHERE status = 'queued' AND cancel_requested;

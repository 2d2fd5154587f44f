-- opsrunner schema v12: durable cron schedules.
--
-- A schedule enqueues one job per slot of its cron expression (seconds
-- field optional) in its IANA time zone. The elected daemon handles every
-- due slot in the transaction that advances `next_slot`, and each job
-- carries the idempotency key `schedule:<name>:<slot, RFC 3339 UTC>`: a
-- crash between the two writes undoes both, two daemons at once are
-- serialised by the row lock on the schedule, and a slot enqueued twice
-- (next_slot moved back by hand) finds the first job instead.
--
-- ops_schedule_slots keeps what became of each handled slot (enqueued, or
-- skipped because the type's flag or pause-all was off, or run by hand) for
-- `schedules show`; slots a catch-up policy passed over after downtime are
-- only counted (`missed_slots`), so a per-second schedule that was down for
-- a day does not write 86,400 rows.

CREATE TABLE ops_schedules (
    name             text PRIMARY KEY CHECK (ops_valid_name(name)),
    cron             text NOT NULL CHECK (char_length(cron) BETWEEN 1 AND 200),
    time_zone        text NOT NULL DEFAULT 'UTC' CHECK (char_length(time_zone) BETWEEN 1 AND 64),
    job_type         text NOT NULL CHECK (ops_valid_name(job_type)),
    payload          jsonb NOT NULL DEFAULT '{}',
    queue            text NOT NULL DEFAULT 'default' CHECK (ops_valid_name(queue)),
    priority         smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    timeout          interval CHECK (timeout > interval '0' AND timeout <= interval '1 day'),
    enabled          boolean NOT NULL DEFAULT true,
    catch_up         text NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_limit   integer NOT NULL DEFAULT 1 CHECK (catch_up_limit BETWEEN 1 AND 1000),
    -- The first slot not yet handled; NULL when the expression has no
    -- future slot.
    next_slot        timestamptz,
    last_slot        timestamptz,
    last_job_id      uuid,
    last_enqueued_at timestamptz,
    missed_slots     bigint NOT NULL DEFAULT 0,
    -- 'config' when a [[schedule]] entry of the daemons' config file owns
    -- it: the CLI then refuses to change it.
    source           text NOT NULL DEFAULT 'cli' CHECK (source IN ('cli', 'config')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text NOT NULL DEFAULT current_user
);

-- The daemon's look for due schedules.
CREATE INDEX ops_schedules_due_idx ON ops_schedules (next_slot) WHERE enabled;

CREATE TABLE ops_schedule_slots (
    schedule    text NOT NULL REFERENCES ops_schedules (name) ON DELETE CASCADE,
    slot        timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('enqueued', 'skipped', 'run_now')),
    job_id      uuid,
    reason      text CHECK (char_length(reason) <= 500),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, slot)
);

COMMENT ON TABLE ops_schedules IS
    'Cron schedules: the elected worker enqueues each due slot with idempotency key schedule:<name>:<slot> in the transaction that advances next_slot.';
COMMENT ON TABLE ops_schedule_slots IS
    'What became of each handled slot of a schedule: the latest 500 per schedule are kept.';

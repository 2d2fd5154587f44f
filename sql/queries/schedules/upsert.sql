-- `schedules add` (and a [[schedule]] entry of the config file): creates the
-- schedule, or replaces its definition when $14 (replace) is true and the
-- existing row has the same source. $1 name, $2 cron, $3 time zone, $4 job
-- type, $5 payload, $6 queue, $7 priority, $8 max attempts, $9 timeout
-- seconds (NULL = the worker's), $10 catch-up, $11 catch-up limit, $12 first
-- slot, $13 source, $15 who. No row comes back when the name is taken (by
-- a schedule of the other source, or without replace).
INSERT INTO ops_schedules AS s (name, cron, time_zone, job_type, payload, queue, priority,
                                max_attempts, timeout, catch_up, catch_up_limit, next_slot,
                                source, updated_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
        CASE WHEN $9::float8 IS NULL THEN NULL ELSE make_interval(secs => $9::float8) END,
        $10, $11, $12, $13, $15)
ON CONFLICT (name) DO UPDATE
    SET cron = excluded.cron, time_zone = excluded.time_zone, job_type = excluded.job_type,
        payload = excluded.payload, queue = excluded.queue, priority = excluded.priority,
        max_attempts = excluded.max_attempts, timeout = excluded.timeout,
        catch_up = excluded.catch_up, catch_up_limit = excluded.catch_up_limit,
        -- A new expression starts from its own next slot; the same one
        -- keeps its place (a re-applied config entry must not skip a slot).
        next_slot = CASE WHEN s.cron = excluded.cron AND s.time_zone = excluded.time_zone
                         THEN s.next_slot ELSE excluded.next_slot END,
        updated_at = now(), updated_by = excluded.updated_by
    WHERE $14::bool AND s.source = excluded.source
RETURNING name

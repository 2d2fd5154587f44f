-- The elected daemon's tick: enabled schedules whose next slot is due at
-- the database time $1, locked so that an operator's change waits for the
-- tick (and the tick for the change). SKIP LOCKED: a schedule an operator
-- is editing is handled at the next tick instead. The columns are
-- schedules/list.sql's.
SELECT name, cron, time_zone, job_type, payload, queue, priority, max_attempts,
       extract(epoch FROM timeout)::float8 AS timeout_secs, enabled, catch_up, catch_up_limit,
       next_slot, last_slot, last_job_id, last_enqueued_at, missed_slots, source,
       updated_at, updated_by
FROM ops_schedules
WHERE enabled AND next_slot <= $1
ORDER BY next_slot
LIMIT 100
FOR UPDATE SKIP LOCKED

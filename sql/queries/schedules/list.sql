-- `schedules list` and `show`: every schedule ($1 NULL) or one, with what it
-- enqueues and when it runs next.
SELECT name, cron, time_zone, job_type, payload, queue, priority, max_attempts,
       extract(epoch FROM timeout)::float8 AS timeout_secs, enabled, catch_up, catch_up_limit,
       next_slot, last_slot, last_job_id, last_enqueued_at, missed_slots, source,
       updated_at, updated_by
FROM ops_schedules
WHERE $1::text IS NULL OR name = $1
ORDER BY name

-- `schedules show`: the latest $2 handled slots of schedule $1, with the
-- status of the job each enqueued.
SELECT sl.slot, sl.outcome, sl.job_id, j.status::text AS job_status, sl.reason, sl.recorded_at
FROM ops_schedule_slots sl
LEFT JOIN ops_jobs j ON j.id = sl.job_id
WHERE sl.schedule = $1
ORDER BY sl.slot DESC
LIMIT $2

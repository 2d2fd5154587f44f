-- A job's transition trail, oldest first. $1 job id.
SELECT from_status::text AS from_status, to_status::text AS to_status, attempt, worker, detail, at
FROM ops_job_events WHERE job_id = $1 ORDER BY id

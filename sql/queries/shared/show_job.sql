-- One job, for `opsrunner jobs show` (never its policy token). $1 id.
SELECT id, job_type, queue, status::text AS status, attempt, max_attempts, created_at, finished_at,
       priority, payload, result, error, run_at, cancel_requested,
       lease_owner, started_at, updated_at
FROM ops_jobs WHERE id = $1

-- One job of one tenant; never the policy token. $1 id, $2 tenant.
SELECT id, job_type, queue, status::text AS status, priority, attempt, max_attempts,
       dry_run, cancel_requested, run_at, created_at, started_at, finished_at, error,
       payload, result
FROM ops_jobs
WHERE id = $1 AND tenant_id = $2

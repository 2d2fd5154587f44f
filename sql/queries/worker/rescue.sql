-- Return jobs whose lease expired (their worker died or lost the database)
-- to the queue, or fail them when they have used every attempt: a job that
-- keeps killing its worker must not loop forever. $1 batch size, $2 the
-- longest lease any daemon may take, in seconds: a running row with no lease,
-- or one further away than that, was not written by a daemon (a raw INSERT,
-- a hand edit) and would otherwise never be rescued.
-- Running rows are found through ops_jobs_running_idx (all of them: they are
-- few), their leases checked on the row.
WITH expired AS (
    SELECT id
    FROM ops_jobs
    WHERE status = 'running'
      AND (lease_expires_at < now()
           OR lease_expires_at IS NULL
           OR lease_expires_at > now() + make_interval(secs => $2::float8))
    ORDER BY lease_expires_at NULLS FIRST
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ops_jobs AS j
SET status = CASE WHEN j.attempt >= j.max_attempts
                  THEN 'failed'::ops_job_status ELSE 'queued'::ops_job_status END,
    error = left('lease expired: worker ' || coalesce(j.lease_owner, 'unknown')
                 || ' stopped renewing it during attempt ' || j.attempt, 500),
    run_at = now(),
    -- The owner goes too: its heartbeat and completion no longer match, and
    -- if it claims the job again it starts a new attempt.
    lease_owner = NULL,
    lease_expires_at = NULL,
    finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END
FROM expired
WHERE j.id = expired.id
RETURNING j.id, j.status::text, j.job_type, j.queue, j.attempt, j.error

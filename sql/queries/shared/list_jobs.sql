-- Newest first, for `opsrunner jobs list` (operators: every tenant).
-- $1 status (NULL = any), $2 job type (NULL = any), $3 limit, $4 a
-- schedule's name (NULL = any): its jobs carry the idempotency key
-- schedule:<name>:<slot>.
--
-- Two branches because the (status, created_at) and (job_type, created_at)
-- indexes leave out running rows (schema v17: a job's running version adds
-- no entry to them, which is 2 of the 12 index insertions a job cost).
-- Running rows come from the running index, which holds at most the
-- fleet's slots, sorted here.
WITH candidates AS (
    (SELECT id, job_type, queue, status, attempt, max_attempts, created_at, finished_at
     FROM ops_jobs
     WHERE status <> 'running'
       AND ($1::text IS NULL OR status = $1::text::ops_job_status)
       AND ($2::text IS NULL OR job_type = $2)
       AND ($4::text IS NULL
            OR idempotency_key LIKE 'schedule:' || replace($4::text, '_', '\_') || ':%')
     ORDER BY created_at DESC
     LIMIT $3)
    UNION ALL
    (SELECT id, job_type, queue, status, attempt, max_attempts, created_at, finished_at
     FROM ops_jobs
     WHERE status = 'running'
       AND ($1::text IS NULL OR $1::text = 'running')
       AND ($2::text IS NULL OR job_type = $2)
       AND ($4::text IS NULL
            OR idempotency_key LIKE 'schedule:' || replace($4::text, '_', '\_') || ':%')
     ORDER BY created_at DESC
     LIMIT $3)
)
SELECT id, job_type, queue, status::text AS status, attempt, max_attempts, created_at, finished_at
FROM candidates
ORDER BY created_at DESC
LIMIT $3

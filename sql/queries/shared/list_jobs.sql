-- Newest first, for `opsrunner jobs list` (operators: every tenant).
-- $1 status (NULL = any), $2 job type (NULL = any), $3 limit, $4 a
-- schedule's name (NULL = any): its jobs carry the idempotency key
-- schedule:<name>:<slot>.
SELECT id, job_type, queue, status::text AS status, attempt, max_attempts, created_at, finished_at
FROM ops_jobs
WHERE ($1::text IS NULL OR status = $1::text::ops_job_status)
  AND ($2::text IS NULL OR job_type = $2)
  AND ($4::text IS NULL
       OR idempotency_key LIKE 'schedule:' || replace($4::text, '_', '\_') || ':%')
ORDER BY created_at DESC
LIMIT $3

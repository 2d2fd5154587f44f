-- Newest first, for `opsrunner jobs list` (operators: every tenant).
-- $1 status (NULL = any), $2 job type (NULL = any), $3 limit, $4 a
-- schedule's name (NULL = any): its jobs carry the idempotency key
-- schedule:<name>:<slot>.
--
-- Two branches because the (status, created_at) and (job_type, created_at)
-- indexes leave out running rows (schema v17: a job's running version adds
-- no entry to them, which is 2 of the 12 index insertions a job cost).
-- Running rows come from the running index, which holds at most the
-- fleet's slots, sorted here. With neither a status nor a type, the third
-- branch reads the newest page of each other status from the
-- (status, created_at) index (4 x the page at most) instead of sorting the
-- whole table (a sequential scan: 100 ms at 600,000 rows, seconds at ten
-- million).
WITH candidates AS (
    (SELECT id, job_type, queue, status, attempt, max_attempts, created_at, finished_at
     FROM ops_jobs
     WHERE status <> 'running'
       AND ($1::text IS NOT NULL OR $2::text IS NOT NULL)
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
    UNION ALL
    (SELECT j.id, j.job_type, j.queue, j.status, j.attempt, j.max_attempts, j.created_at, j.finished_at
     FROM unnest(enum_range(NULL::ops_job_status)) AS s(status)
     CROSS JOIN LATERAL (
         SELECT id, job_type, queue, status, attempt, max_attempts, created_at, finished_at
         FROM ops_jobs
         WHERE status = s.status
           AND status <> 'running'
           AND ($4::text IS NULL
                OR idempotency_key LIKE 'schedule:' || replace($4::text, '_', '\_') || ':%')
         ORDER BY created_at DESC
         LIMIT $3) AS j
     WHERE $1::text IS NULL AND $2::text IS NULL AND s.status <> 'running')
)
SELECT id, job_type, queue, status::text AS status, attempt, max_attempts, created_at, finished_at
FROM candidates
ORDER BY created_at DESC
LIMIT $3

-- Newest first, one tenant (filtered here and by row-level security).
-- $1 tenant, $2 status (NULL = any), $3 job type (NULL = any), $4 limit.
--
-- Three branches, as in shared/list_jobs.sql: the listing indexes leave out
-- running rows (schema v17), which come from the running index; with
-- neither filter, the newest page of each other status.
WITH candidates AS (
    (SELECT id, job_type, queue, status, priority, attempt, max_attempts, dry_run,
            cancel_requested, run_at, created_at, started_at, finished_at, error
     FROM ops_jobs
     WHERE tenant_id = $1
       AND status <> 'running'
       AND ($2::text IS NOT NULL OR $3::text IS NOT NULL)
       AND ($2::text IS NULL OR status = $2::text::ops_job_status)
       AND ($3::text IS NULL OR job_type = $3)
     ORDER BY created_at DESC
     LIMIT $4)
    UNION ALL
    (SELECT id, job_type, queue, status, priority, attempt, max_attempts, dry_run,
            cancel_requested, run_at, created_at, started_at, finished_at, error
     FROM ops_jobs
     WHERE tenant_id = $1
       AND status = 'running'
       AND ($2::text IS NULL OR $2::text = 'running')
       AND ($3::text IS NULL OR job_type = $3)
     ORDER BY created_at DESC
     LIMIT $4)
    UNION ALL
    (SELECT j.id, j.job_type, j.queue, j.status, j.priority, j.attempt, j.max_attempts, j.dry_run,
            j.cancel_requested, j.run_at, j.created_at, j.started_at, j.finished_at, j.error
     FROM unnest(enum_range(NULL::ops_job_status)) AS s(status)
     CROSS JOIN LATERAL (
         SELECT id, job_type, queue, status, priority, attempt, max_attempts, dry_run,
                cancel_requested, run_at, created_at, started_at, finished_at, error
         FROM ops_jobs
         WHERE tenant_id = $1
           AND status = s.status
           AND status <> 'running'
         ORDER BY created_at DESC
         LIMIT $4) AS j
     WHERE $2::text IS NULL AND $3::text IS NULL AND s.status <> 'running')
)
SELECT id, job_type, queue, status::text AS status, priority, attempt, max_attempts,
       dry_run, cancel_requested, run_at, created_at, started_at, finished_at, error
FROM candidates
ORDER BY created_at DESC
LIMIT $4

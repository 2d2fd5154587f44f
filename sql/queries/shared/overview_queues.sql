-- `opsrunner top`, `opsrunner stats` and the console's overview: $1 the
-- tenant (NULL = every tenant), $2 the window of the finished counts in
-- seconds (60 for top, 3600 for the console; the *_last_minute columns
-- count that window). Per job type and queue, the jobs
-- queued and runnable now, queued for later (run_at ahead), running, and
-- succeeded, failed and cancelled in the last minute, with the age of the
-- oldest runnable job. A plain read (ACCESS SHARE, no row locks): it never
-- waits for a worker and no worker waits for it. The unfinished rows come
-- from the partial claim and running indexes; the last minute's from the
-- finished_at index. Its cost grows with the backlog (about 350 ms at a
-- million queued jobs), which is why `top` slows its refresh in proportion.
WITH live AS (
    SELECT job_type, queue,
           count(*) FILTER (WHERE status = 'queued' AND run_at <= now()) AS queued,
           count(*) FILTER (WHERE status = 'queued' AND run_at > now())  AS scheduled,
           count(*) FILTER (WHERE status = 'running')                    AS running,
           extract(epoch FROM now() - min(run_at) FILTER (
               WHERE status = 'queued' AND run_at <= now()))::float8     AS oldest_age
    FROM ops_jobs
    WHERE status IN ('queued', 'running') AND ($1::text IS NULL OR tenant_id = $1)
    GROUP BY job_type, queue
), recent AS (
    SELECT job_type, queue,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed')    AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM ops_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled')
      AND finished_at > now() - make_interval(secs => $2)
      AND ($1::text IS NULL OR tenant_id = $1)
    GROUP BY job_type, queue
)
SELECT job_type, queue,
       coalesce(l.queued, 0)     AS queued,
       coalesce(l.scheduled, 0)  AS scheduled,
       coalesce(l.running, 0)    AS running,
       coalesce(r.succeeded, 0)  AS succeeded_last_minute,
       coalesce(r.failed, 0)     AS failed_last_minute,
       coalesce(r.cancelled, 0)  AS cancelled_last_minute,
       l.oldest_age              AS oldest_queued_age_seconds
FROM live l
FULL JOIN recent r USING (job_type, queue)
ORDER BY job_type, queue

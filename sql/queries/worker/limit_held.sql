-- For the held-back gauges (maintenance leader): every limited type with
-- its rules and rate window (as worker/lock_type_limit.sql reads them, but
-- without the lock), its runnable queued jobs, its running jobs, and the
-- runnable jobs of tenants already at the per-tenant limit. Counts every
-- runnable row of the limited types only, so it is paced like the queue
-- gauges. No parameters.
SELECT l.max_running,
       l.rate_limit,
       extract(epoch FROM l.rate_period)::float8 AS rate_period_secs,
       l.per_tenant_max_running,
       l.fair,
       extract(epoch FROM l.rate_window_start)::float8 AS rate_window_start,
       l.rate_window_count,
       l.rate_previous_count,
       l.fair_after,
       extract(epoch FROM clock_timestamp())::float8 AS db_now,
       l.job_type,
       (SELECT count(*) FROM ops_jobs AS q
        WHERE q.status = 'queued' AND q.job_type = l.job_type AND q.run_at <= now()) AS runnable,
       (SELECT count(*) FROM ops_jobs AS r
        WHERE r.status = 'running' AND r.job_type = l.job_type) AS running,
       (SELECT count(*) FROM ops_jobs AS q
        WHERE q.status = 'queued' AND q.job_type = l.job_type AND q.run_at <= now()
          AND l.per_tenant_max_running IS NOT NULL
          AND q.tenant_id IN (SELECT r.tenant_id FROM ops_jobs AS r
                              WHERE r.status = 'running' AND r.job_type = l.job_type
                              GROUP BY r.tenant_id
                              HAVING count(*) >= l.per_tenant_max_running)) AS capped
FROM ops_type_limits AS l
ORDER BY l.job_type

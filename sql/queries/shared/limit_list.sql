-- `opsrunner limits list`: every limit's rules with the type's running jobs
-- now. No parameters.
SELECT l.max_running,
       l.rate_limit,
       extract(epoch FROM l.rate_period)::float8 AS rate_period_secs,
       l.per_tenant_max_running,
       l.fair,
       l.job_type,
       (SELECT count(*) FROM ops_jobs j WHERE j.status = 'running' AND j.job_type = l.job_type)
           AS running,
       l.updated_at, l.updated_by
FROM ops_type_limits l
ORDER BY l.job_type

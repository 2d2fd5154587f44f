-- `opsrunner limits list`: every limit with the type's running jobs now.
-- No parameters.
SELECT l.job_type, l.max_running,
       (SELECT count(*) FROM ops_jobs j WHERE j.status = 'running' AND j.job_type = l.job_type)
           AS running,
       l.updated_at, l.updated_by
FROM ops_type_limits l
ORDER BY l.job_type

-- Queue gauges, run by the elected maintenance leader only: depth of runnable
-- jobs and the age of the oldest one, per queue and job type (uses
-- ops_jobs_claim_idx, whose leading column is the job type).
-- No parameters.
SELECT queue, job_type, count(*), coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8
FROM ops_jobs
WHERE status = 'queued' AND run_at <= now()
GROUP BY queue, job_type

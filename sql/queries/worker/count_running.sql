-- A limited type's running jobs per tenant,
-- counted after its limit row was locked (a statement of its own, so its
-- snapshot includes every claim committed by the daemon that held the lock
-- before). Jobs finishing meanwhile count as running: conservative. Reads
-- the running rows only (ops_jobs_running_idx), at most every daemon's
-- slots. $1 job type.
SELECT tenant_id AS tenant, count(*) AS running
FROM ops_jobs
WHERE status = 'running' AND job_type = $1
GROUP BY tenant_id

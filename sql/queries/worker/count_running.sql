-- A limited type's running jobs, counted after its limit row was locked (a
-- statement of its own, so its snapshot includes every claim committed by
-- the daemon that held the lock before). Jobs finishing meanwhile count as
-- running: conservative. $1 job type.
SELECT count(*) FROM ops_jobs WHERE status = 'running' AND job_type = $1

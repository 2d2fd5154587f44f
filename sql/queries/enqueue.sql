-- $1 job type, $2 queue, $3 priority, $4 payload, $5 max attempts,
-- $6 run at (NULL = now), $7 timeout in seconds (NULL = the worker default).
INSERT INTO ops_jobs (job_type, queue, priority, payload, max_attempts, run_at, timeout)
VALUES ($1, $2, $3, $4, $5, coalesce($6, now()),
        CASE WHEN $7::float8 IS NULL THEN NULL ELSE make_interval(secs => $7::float8) END)
RETURNING id

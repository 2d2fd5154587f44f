-- Queued jobs of types this daemon has no handler for, largest first: a
-- type nobody registers (a typo such as 'slep') waits forever otherwise.
-- $1 the types the daemon handles, $2 how many types to name (the rest are
-- summed by the caller's query below the limit). Reads the partial index
-- ops_jobs_claim2_idx (job_type, ...) WHERE status = 'queued'; run once a
-- minute.
SELECT job_type, count(*)
FROM ops_jobs
WHERE status = 'queued' AND NOT (job_type = ANY($1::text[]))
GROUP BY job_type
ORDER BY count(*) DESC, job_type
LIMIT $2

-- How many jobs a bulk retry or cancel would change, for the confirmation:
-- $1 tenant (NULL = every tenant), $2 status, $3 job type, $4 queue, $5
-- since (as in bulk_batch.sql: finished for retry, created for cancel: $6
-- true for retry). Row-level security narrows it for the shim's role too.
SELECT count(*)
FROM ops_jobs j
WHERE j.status = $2::text::ops_job_status
  -- Always true together with the line above; written out so that a
  -- custom plan sees which index serves (schema v17: the listing indexes
  -- leave out running rows, the running index holds only them).
  AND ($2::text = 'running' OR j.status <> 'running')
  AND ($2::text <> 'running' OR j.status = 'running')
  AND ($1::text IS NULL OR j.tenant_id = $1)
  AND ($3::text IS NULL OR j.job_type = $3)
  AND ($4::text IS NULL OR j.queue = $4)
  AND ($5::timestamptz IS NULL
       OR (CASE WHEN $6::bool THEN coalesce(j.finished_at, j.created_at) ELSE j.created_at END) >= $5)

-- The console's job list for tenant $1 (row-level security narrows it
-- too), newest first, keyset-paginated on the id: $2 status, $3 job type,
-- $4 queue (NULL = any), $5 the id of the last row of the previous page
-- (NULL = first page), $6 page size, $7 created since (NULL = any time),
-- $8 a schedule's name (its jobs' idempotency keys), $9 an id prefix (hex,
-- with or without dashes). Ids are UUIDv7 since schema v10, so id order is
-- creation order, and the primary key serves every page at the same cost
-- (page 1 or page 10,000) without another index on the hot table. (Rows
-- from before v10 have random ids: they sort among themselves by id.)
SELECT id, job_type, queue, status::text AS status, attempt, max_attempts, created_at,
       finished_at, error
FROM ops_jobs
WHERE tenant_id = $1
  AND ($2::text IS NULL OR status = $2::text::ops_job_status)
  -- Always true together with the line above; written out so that a
  -- custom plan sees which index serves a status filter: the listing
  -- indexes leave out running rows (schema v17), the running index holds
  -- only them.
  AND ($2::text IS NULL OR $2::text = 'running' OR status <> 'running')
  AND ($2::text IS DISTINCT FROM 'running' OR status = 'running')
  AND ($3::text IS NULL OR job_type = $3)
  AND ($4::text IS NULL OR queue = $4)
  AND ($5::uuid IS NULL OR id < $5)
  AND ($7::timestamptz IS NULL OR created_at >= $7)
  AND ($8::text IS NULL
       OR idempotency_key LIKE 'schedule:' || replace($8::text, '_', '\_') || ':%')
  AND ($9::text IS NULL OR replace(id::text, '-', '') LIKE replace($9::text, '-', '') || '%')
ORDER BY id DESC
LIMIT $6

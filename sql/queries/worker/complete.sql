-- Write many outcomes in one statement. A row is updated only while this
-- worker still holds that attempt's lease (fencing): a worker whose lease
-- expired and whose job was re-claimed cannot overwrite the newer attempt.
-- $1 ids, $2 attempts, $3 new statuses, $4 results, $5 errors,
-- $6 retry delays in seconds, $7 refund the attempt (graceful shutdown),
-- $8 lease owner.
UPDATE ops_jobs AS j
SET status = c.status::ops_job_status,
    result = c.result,
    error = CASE WHEN c.status = 'cancelled' AND j.cancel_reason IS NOT NULL
                 THEN left(c.error || ': ' || j.cancel_reason, 500)
                 ELSE c.error END,
    attempt = CASE WHEN c.refund THEN j.attempt - 1 ELSE j.attempt END,
    run_at = CASE WHEN c.status = 'queued'
                  THEN now() + make_interval(secs => coalesce(c.delay_secs, 0))
                  ELSE j.run_at END,
    finished_at = CASE WHEN c.status IN ('succeeded', 'failed', 'cancelled') THEN now() END,
    lease_expires_at = NULL,
    updated_at = now()
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::text[], $6::float8[], $7::bool[])
     AS c(id, attempt, status, result, error, delay_secs, refund)
WHERE j.id = c.id
  -- `status::text` keeps the planner off the status indexes (before v17 the
  -- (status, created_at) index held thousands of dead 'running' entries
  -- after a burst; since v17 only the running index holds running rows,
  -- and its dead entries would be waded through the same way). Each row is
  -- found by primary key from the unnest side.
  AND j.attempt = c.attempt
  AND j.lease_owner = $8
  AND j.status::text = 'running'
RETURNING j.id

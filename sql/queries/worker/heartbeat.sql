-- Renew the leases of this worker's running jobs and report which of them
-- have been asked to cancel. Jobs missing from the answer are no longer ours.
-- $1 ids, $2 lease owner, $3 lease length in seconds.
UPDATE ops_jobs
SET lease_expires_at = now() + make_interval(secs => $3),
    updated_at = now()
WHERE id = ANY($1::uuid[])
  AND lease_owner = $2
  -- By primary key only (see complete.sql).
  AND status::text = 'running'
RETURNING id, cancel_requested

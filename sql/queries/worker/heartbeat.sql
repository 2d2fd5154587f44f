-- Renew the leases of this worker's running jobs and report which of them
-- have been asked to cancel. $1 job ids and $2 their attempts (pairs: this
-- worker may hold an old attempt of a job it has claimed again), $3 lease
-- owner, $4 lease length in seconds. A pair missing from the answer is no
-- longer ours: the row was rescued or moved on to a newer attempt.
UPDATE ops_jobs AS j
SET lease_expires_at = now() + make_interval(secs => $4),
    updated_at = now()
FROM unnest($1::uuid[], $2::int[]) AS r(id, attempt)
WHERE j.id = r.id
  -- By primary key from the unnest side (see complete.sql).
  AND j.attempt = r.attempt
  AND j.lease_owner = $3
  AND j.status::text = 'running'
RETURNING j.id, j.attempt, j.cancel_requested

-- Claim up to $3 runnable jobs in one short committed statement.
-- $1 enabled job types, $2 queues (NULL = every queue), $3 free slots,
-- $4 lease owner, $5 lease length in seconds.
--
-- `id = ANY(ARRAY(subquery))` rather than a join: the statement is prepared
-- once and Postgres may switch to a generic plan, which cannot see $3. A
-- join then plans for thousands of candidates and hashes the whole table on
-- every claim; an array of ids always becomes primary-key lookups.
UPDATE ops_jobs AS j
SET status = 'running',
    attempt = j.attempt + 1,
    lease_owner = $4,
    lease_expires_at = now() + make_interval(secs => $5),
    started_at = now(),
    updated_at = now()
WHERE j.id = ANY (ARRAY(
        SELECT id
        FROM ops_jobs
        WHERE status = 'queued'
          AND run_at <= now()
          AND job_type = ANY($1::text[])
          AND ($2::text[] IS NULL OR queue = ANY($2::text[]))
        ORDER BY priority, run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED))
  AND j.status = 'queued'
RETURNING j.id, j.job_type, j.queue, j.payload, j.attempt, j.max_attempts,
          extract(epoch FROM j.timeout)::float8 AS timeout_secs,
          j.cancel_requested,
          j.dry_run,
          j.tenant_id,
          j.policy_token,
          extract(epoch FROM (now() - j.run_at))::float8 AS queue_wait_secs

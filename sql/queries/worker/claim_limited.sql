-- Claim jobs of one limited type, the last statement of the transaction
-- that locked its limit (worker/lock_type_limit.sql) and then counted its
-- running jobs (worker/count_running.sql): at most $6 jobs, what the limit
-- leaves. $1 job type, $2 queues (NULL = every queue), $3 free slots
-- (unused past the count: the caller passes least(free, room) as $6 too),
-- $4 lease owner, $5 lease length in seconds, $6 how many to claim.
-- Returns what worker/claim.sql returns.
UPDATE ops_jobs AS j
SET status = 'running',
    attempt = j.attempt + 1,
    lease_owner = $4,
    lease_expires_at = now() + make_interval(secs => $5),
    started_at = now(),
    updated_at = now()
WHERE j.id = ANY (ARRAY(
        SELECT q.id
        FROM ops_jobs AS q
        WHERE q.status = 'queued'
          AND q.job_type = $1
          AND q.run_at <= now()
          AND ($2::text[] IS NULL OR q.queue = ANY($2::text[]))
        ORDER BY q.priority, q.run_at
        LIMIT least($3::int8, $6::int8)
        FOR UPDATE SKIP LOCKED))
  AND j.status::text = 'queued'
RETURNING j.id, j.job_type, j.queue, j.payload, j.attempt, j.max_attempts,
          extract(epoch FROM j.timeout)::float8 AS timeout_secs,
          j.cancel_requested,
          j.dry_run,
          j.tenant_id,
          j.policy_token,
          extract(epoch FROM (now() - j.run_at))::float8 AS queue_wait_secs,
          extract(epoch FROM now())::float8 AS db_now

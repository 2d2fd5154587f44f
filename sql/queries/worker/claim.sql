-- Claim up to $3 runnable jobs in one short committed statement.
-- $1 enabled job types, $2 queues (NULL = every queue), $3 free slots,
-- $4 lease owner, $5 lease length in seconds.
--
-- For each enabled type, the first $3 runnable rows in (priority, run_at)
-- order come from that type's range of ops_jobs_claim_idx, locked with SKIP
-- LOCKED as the scan meets them; the best $3 of those are claimed. The work
-- is bounded by (enabled types x $3) index entries whatever the backlog of
-- other types and whatever the planner's statistics say (a plain ordered
-- scan over all queued rows stepped over disabled types' backlogs, and was
-- replaced by a sort of every queued row when statistics were stale). Rows
-- locked but not among the best $3 are released when the statement commits.
--
-- `id = ANY(ARRAY(subquery))` rather than a join: the statement is prepared
-- once and Postgres may switch to a generic plan, which cannot see $3; an
-- array of ids always becomes primary-key lookups. `status::text` keeps the
-- planner from intersecting those lookups with the (status, created_at)
-- index, which without statistics it believes to be small.
UPDATE ops_jobs AS j
SET status = 'running',
    attempt = j.attempt + 1,
    lease_owner = $4,
    lease_expires_at = now() + make_interval(secs => $5),
    started_at = now(),
    updated_at = now()
WHERE j.id = ANY (ARRAY(
        SELECT c.id
        FROM unnest($1::text[]) AS t(job_type)
        CROSS JOIN LATERAL (
            SELECT q.id, q.priority, q.run_at
            FROM ops_jobs AS q
            WHERE q.status = 'queued'
              AND q.job_type = t.job_type
              AND q.run_at <= now()
              AND ($2::text[] IS NULL OR q.queue = ANY($2::text[]))
            ORDER BY q.priority, q.run_at
            LIMIT $3
            FOR UPDATE SKIP LOCKED) AS c
        ORDER BY c.priority, c.run_at
        LIMIT $3))
  AND j.status::text = 'queued'
RETURNING j.id, j.job_type, j.queue, j.payload, j.attempt, j.max_attempts,
          extract(epoch FROM j.timeout)::float8 AS timeout_secs,
          j.cancel_requested,
          j.dry_run,
          j.tenant_id,
          j.policy_token,
          extract(epoch FROM (now() - j.run_at))::float8 AS queue_wait_secs,
          -- The database's clock, for every time comparison the worker
          -- makes about this job (policy-token expiry): a worker's own
          -- clock may be minutes off.
          extract(epoch FROM now())::float8 AS db_now

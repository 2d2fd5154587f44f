-- Claim jobs of one type round-robin across tenants: the last statement but
-- one of the transaction that locked the type's limit row
-- (worker/lock_type_limit.sql) and counted its running jobs per tenant
-- (worker/count_running.sql), so no other daemon claims this type
-- meanwhile. $1 job type, $2 queues (NULL = every queue), $3 how many to
-- claim, $4 lease owner, $5 lease length in seconds, $6 the tenant served
-- last (NULL: none yet), $7 and $8 tenants with
-- running jobs and how many, $9 the most each tenant may run (NULL: no
-- per-tenant limit).
--
-- Tenants are walked from the one after $6, wrapping around (one index
-- probe each on ops_jobs_tenant_claim_idx, at most 1,000 per claim; past
-- that, the cursor brings the others' turn in later claims). Each tenant
-- offers its best jobs in (priority, run_at) order, up to its room; the
-- claim takes every tenant's first, then every tenant's second, and so on,
-- so one tenant's backlog and priorities never put another tenant's job
-- behind more than one of its own. The candidates are read without locks
-- and only the chosen ones are locked (SKIP LOCKED): claims of this type
-- already take turns on the limit row.
--
-- Returns what worker/claim.sql returns, plus each job's round and
-- position among the tenants (the caller keeps the last one's tenant as
-- the next claim's starting point).
WITH RECURSIVE after_cursor(n, tenant) AS (
    SELECT 1, (SELECT q.tenant_id
               FROM ops_jobs AS q
               WHERE q.status = 'queued' AND q.job_type = $1
                 AND ($6::text IS NULL OR q.tenant_id > $6::text)
               ORDER BY q.tenant_id
               LIMIT 1)
    UNION ALL
    SELECT w.n + 1, (SELECT q.tenant_id
                     FROM ops_jobs AS q
                     WHERE q.status = 'queued' AND q.job_type = $1
                       AND q.tenant_id > w.tenant
                     ORDER BY q.tenant_id
                     LIMIT 1)
    FROM after_cursor AS w
    WHERE w.tenant IS NOT NULL AND w.n < 1000
), up_to_cursor(n, tenant) AS (
    SELECT 1, (SELECT q.tenant_id
               FROM ops_jobs AS q
               WHERE q.status = 'queued' AND q.job_type = $1
                 AND $6::text IS NOT NULL AND q.tenant_id <= $6::text
               ORDER BY q.tenant_id
               LIMIT 1)
    UNION ALL
    SELECT w.n + 1, (SELECT q.tenant_id
                     FROM ops_jobs AS q
                     WHERE q.status = 'queued' AND q.job_type = $1
                       AND q.tenant_id > w.tenant
                       AND q.tenant_id <= $6::text
                     ORDER BY q.tenant_id
                     LIMIT 1)
    FROM up_to_cursor AS w
    WHERE w.tenant IS NOT NULL AND w.n < 1000
), tenants AS (
    SELECT t.tenant, row_number() OVER (ORDER BY t.part, t.n) AS pos
    FROM (SELECT 1 AS part, n, tenant FROM after_cursor WHERE tenant IS NOT NULL
          UNION ALL
          SELECT 2, n, tenant FROM up_to_cursor WHERE tenant IS NOT NULL) AS t
    ORDER BY t.part, t.n
    LIMIT 1000
), running AS (
    SELECT r.tenant, r.n FROM unnest($7::text[], $8::int8[]) AS r(tenant, n)
), candidates AS (
    SELECT c.id, t.pos,
           row_number() OVER (PARTITION BY t.pos ORDER BY c.priority, c.run_at) AS round
    FROM tenants AS t
    LEFT JOIN running AS r ON r.tenant = t.tenant
    CROSS JOIN LATERAL (
        SELECT q.id, q.priority, q.run_at
        FROM ops_jobs AS q
        WHERE q.status = 'queued'
          AND q.job_type = $1
          AND q.tenant_id = t.tenant
          AND q.run_at <= now()
          AND ($2::text[] IS NULL OR q.queue = ANY($2::text[]))
        ORDER BY q.priority, q.run_at
        LIMIT CASE WHEN $9::int4 IS NULL THEN $3::int8
                   ELSE least($3::int8, greatest($9::int4 - coalesce(r.n, 0), 0)) END
    ) AS c
), chosen AS (
    SELECT id, pos, round FROM candidates ORDER BY round, pos LIMIT $3::int8
), locked AS (
    SELECT q.id
    FROM ops_jobs AS q
    WHERE q.id = ANY (ARRAY(SELECT id FROM chosen))
      AND q.status = 'queued'
    FOR UPDATE SKIP LOCKED
)
UPDATE ops_jobs AS j
SET status = 'running',
    attempt = j.attempt + 1,
    lease_owner = $4,
    lease_expires_at = now() + make_interval(secs => $5),
    started_at = now(),
    updated_at = now()
FROM chosen AS ch
WHERE j.id = ch.id
  AND j.id IN (SELECT id FROM locked)
  AND j.status::text = 'queued'
RETURNING j.id, j.job_type, j.queue, j.payload, j.attempt, j.max_attempts,
          extract(epoch FROM j.timeout)::float8 AS timeout_secs,
          j.cancel_requested,
          j.dry_run,
          j.tenant_id,
          j.policy_token,
          extract(epoch FROM (now() - j.run_at))::float8 AS queue_wait_secs,
          extract(epoch FROM now())::float8 AS db_now,
          ch.round AS fair_round,
          ch.pos AS fair_pos

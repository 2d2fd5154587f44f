-- Enqueue one job: the CLI's and the library's `jobs::insert`, as a role
-- that may insert jobs (the shim goes through api/enqueue.sql).
-- $1 job type, $2 queue, $3 priority, $4 payload, $5 max attempts,
-- $6 run at (NULL = now), $7 timeout seconds (NULL = worker default),
-- $8 tenant (NULL = the default tenant, 'default'), $9 idempotency key (NULL = none),
-- $10 policy token (NULL = none), $11 dry run (NULL = false), $12 the new
-- job's id (the caller's UUIDv7; see migration 0010).
-- No row comes back when the tenant already has a job with this key: the
-- caller then reads that job (api/find_idempotent.sql). Concurrent repeats
-- wait on the unique index, so exactly one row is ever created.
INSERT INTO ops_jobs (id, job_type, queue, priority, payload, max_attempts, run_at, timeout,
                      tenant_id, idempotency_key, policy_token, dry_run)
VALUES ($12, $1, $2, $3, $4, $5, coalesce($6, now()),
        CASE WHEN $7::float8 IS NULL THEN NULL ELSE make_interval(secs => $7::float8) END,
        coalesce($8, 'default'), $9, $10, coalesce($11::bool, false))
ON CONFLICT (coalesce(tenant_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL
DO NOTHING
RETURNING id, status::text

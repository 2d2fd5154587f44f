-- Enqueue many jobs in one statement (one NOTIFY), for `jobs::insert_many`.
-- Arrays of equal length, one element per job: $1 job types, $2 queues,
-- $3 priorities, $4 payloads, $5 max attempts, $6 run at (NULL = now),
-- $7 timeout seconds (NULL = worker default), $8 tenants, $9 idempotency
-- keys, $10 policy tokens, $11 dry runs, $12 ids (the caller's UUIDv7s). A job whose idempotency key its
-- tenant already used is skipped; the ids of the rows created come back.
INSERT INTO ops_jobs (id, job_type, queue, priority, payload, max_attempts, run_at, timeout,
                      tenant_id, idempotency_key, policy_token, dry_run)
SELECT j.id, j.job_type, j.queue, j.priority, j.payload, j.max_attempts, coalesce(j.run_at, now()),
       CASE WHEN j.timeout_secs IS NULL THEN NULL ELSE make_interval(secs => j.timeout_secs) END,
       coalesce(j.tenant_id, 'default'), j.idempotency_key, j.policy_token, j.dry_run
FROM unnest($1::text[], $2::text[], $3::int2[], $4::jsonb[], $5::int4[], $6::timestamptz[],
            $7::float8[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::uuid[])
     AS j(job_type, queue, priority, payload, max_attempts, run_at, timeout_secs,
          tenant_id, idempotency_key, policy_token, dry_run, id)
ON CONFLICT (coalesce(tenant_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL
DO NOTHING
RETURNING id

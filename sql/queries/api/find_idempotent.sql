-- The job an earlier request with the same Idempotency-Key created, and
-- whether this request asked for the same thing. $1 tenant, $2 key,
-- $3 job type, $4 queue, $5 payload.
SELECT id, status::text,
       (job_type = $3 AND queue = $4 AND payload = $5) AS same_request
FROM ops_jobs
WHERE coalesce(tenant_id, '') = $1 AND idempotency_key = $2

-- Enqueue one job of one tenant: the shim's only insert (its role has no
-- INSERT on ops_jobs). ops_api_enqueue() (migration 0009) writes a new queued
-- job and nothing else, bounds the payload on its rendered size, and leaves
-- the row out when the tenant already used the idempotency key (the caller
-- then reads that job with api/find_idempotent.sql).
-- $1 tenant, $2 job type, $3 queue, $4 priority, $5 payload, $6 max
-- attempts, $7 run at (NULL = now), $8 timeout seconds (NULL = worker
-- default), $9 idempotency key, $10 policy token, $11 dry run.
SELECT job_id, job_status
FROM ops_api_enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)

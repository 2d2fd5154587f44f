-- Request cancellation of one job of one tenant, audited: the shim's only
-- write to a job (its role may not update ops_jobs). ops_api_cancel()
-- (migration 0009) is shared/cancel_job.sql bound to the tenant.
-- $1 tenant, $2 id, $3 reason, $4 actor. NULL when the tenant has no such
-- job or it already finished.
SELECT ops_api_cancel($1, $2, $3, $4)

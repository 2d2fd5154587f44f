-- The job that first carried policy token $1 (ops_policy_token_uses,
-- written by the insert trigger of migration 0009). The worker runs an
-- action job only when this is that job: a copied or replayed token names
-- another job, or none.
SELECT job_id FROM ops_policy_token_uses WHERE token_sha256 = sha256(convert_to($1, 'UTF8'))

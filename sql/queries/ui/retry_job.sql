-- The console's Retry button (migration 0014, ops_api_retry): $1 tenant,
-- $2 job id, $3 who. The id when it went back to the queue, NULL otherwise.
SELECT ops_api_retry($1, $2, $3)

-- Delete-on-success (`retention.succeeded = "0s"`): the succeeded jobs of one
-- completion batch are deleted instead of marked succeeded, Graphile
-- Worker's model: no finished row version, no index entries for it, nothing
-- for retention to prune later, and no result kept. Fenced like
-- complete.sql: a row goes only while this worker still holds that
-- attempt's lease. The event rows a retried or rescued job had go with it.
-- $1 ids, $2 attempts, $3 lease owner. Returns the ids deleted.
WITH gone AS (
    DELETE FROM ops_jobs AS j
    USING unnest($1::uuid[], $2::int[]) AS c(id, attempt)
    WHERE j.id = c.id
      AND j.attempt = c.attempt
      AND j.lease_owner = $3
      AND j.status::text = 'running'
    RETURNING j.id
), events AS (
    -- An array, so that an empty batch is no scan of the events at all.
    DELETE FROM ops_job_events AS e
    WHERE e.job_id = ANY (ARRAY(SELECT id FROM gone))
)
SELECT id FROM gone

-- The overview's chart: tenant $1's jobs finished per minute over the last
-- hour, by outcome (from the finished_at index).
SELECT date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM ops_jobs
WHERE tenant_id = $1
  AND status IN ('succeeded', 'failed', 'cancelled')
  AND finished_at > now() - interval '1 hour'
GROUP BY 1
ORDER BY 1

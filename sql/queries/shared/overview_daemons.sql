-- `opsrunner top` and `opsrunner stats`. No parameters. Each daemon that holds leases now
-- (its lease owner name, host:pid:random), how many jobs it runs, and when
-- its latest lease expires (a heartbeat moves it forward by worker.lease),
-- plus the holder of the maintenance lease even when it runs nothing. Read
-- from the running index and ops_leaders; no locks.
SELECT owner,
       sum(running)::int8                                       AS running,
       extract(epoch FROM max(lease_until) - now())::float8     AS lease_expires_in_seconds,
       bool_or(leads)                                           AS leads_maintenance
FROM (
    SELECT lease_owner AS owner, count(*) AS running, max(lease_expires_at) AS lease_until,
           false AS leads
    FROM ops_jobs
    WHERE status = 'running' AND lease_owner IS NOT NULL
    GROUP BY lease_owner
    UNION ALL
    SELECT owner, 0, NULL, expires_at > now()
    FROM ops_leaders
    WHERE name = 'maintenance'
) d
GROUP BY owner
ORDER BY owner

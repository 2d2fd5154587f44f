-- The first statement of a limited type's claim: takes the type's limit row,
-- so that claims of this type from every daemon take turns; the claim's
-- own statements then see every earlier claim committed. $1 job type.
-- The rules, the rate window, the fair cursor, and the database's clock
-- (clock_timestamp, not now(): the transaction may have waited for the lock
-- for as long as another daemon's claim took). No row when the limit was
-- cleared meanwhile.
SELECT max_running,
       rate_limit,
       extract(epoch FROM rate_period)::float8 AS rate_period_secs,
       per_tenant_max_running,
       fair,
       extract(epoch FROM rate_window_start)::float8 AS rate_window_start,
       rate_window_count,
       rate_previous_count,
       fair_after,
       extract(epoch FROM clock_timestamp())::float8 AS db_now
FROM ops_type_limits
WHERE job_type = $1
FOR UPDATE

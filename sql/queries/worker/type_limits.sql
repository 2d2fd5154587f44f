-- Every per-type limit's rules, reloaded with the flags. No parameters.
SELECT job_type,
       max_running,
       rate_limit,
       extract(epoch FROM rate_period)::float8 AS rate_period_secs,
       per_tenant_max_running,
       fair
FROM ops_type_limits

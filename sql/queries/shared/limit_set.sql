-- `opsrunner limits set`: writes a type's whole rule set (the CLI merges
-- the options given with the rules already there). $1 job type, $2 max
-- running, $3 rate limit, $4 rate period in seconds (1 or 60), $5
-- per-tenant max running, $6 fair, $7 who; NULL for a rule not set.
-- Audited with the rules written.
WITH l AS (
    INSERT INTO ops_type_limits
        (job_type, max_running, rate_limit, rate_period, per_tenant_max_running, fair, updated_by)
    VALUES ($1, $2, $3, make_interval(secs => $4::float8), $5, $6, $7)
    ON CONFLICT (job_type) DO UPDATE
        SET max_running = excluded.max_running,
            rate_limit = excluded.rate_limit,
            rate_period = excluded.rate_period,
            per_tenant_max_running = excluded.per_tenant_max_running,
            fair = excluded.fair,
            updated_at = now(),
            updated_by = excluded.updated_by
    RETURNING job_type
)
INSERT INTO ops_audit_log (actor, action, target, detail)
SELECT $7, 'limit.set', job_type,
       jsonb_build_object('max_running', $2::int4, 'rate_limit', $3::int4,
                          'rate_period_secs', $4::float8,
                          'per_tenant_max_running', $5::int4, 'fair', $6::bool)
FROM l

-- `opsrunner limits set`: $1 job type, $2 max running, $3 who; audited.
WITH l AS (
    INSERT INTO ops_type_limits (job_type, max_running, updated_by)
    VALUES ($1, $2, $3)
    ON CONFLICT (job_type) DO UPDATE
        SET max_running = excluded.max_running, updated_at = now(), updated_by = excluded.updated_by
    RETURNING job_type
)
INSERT INTO ops_audit_log (actor, action, target, detail)
SELECT $3, 'limit.set', job_type, jsonb_build_object('max_running', $2::int)
FROM l

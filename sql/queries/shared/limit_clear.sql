-- `opsrunner limits clear`: $1 job type, $2 who; audited. The count of
-- limits removed (0 or 1).
WITH l AS (
    DELETE FROM ops_type_limits WHERE job_type = $1 RETURNING job_type
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, detail)
    SELECT $2, 'limit.clear', job_type, '{}'::jsonb FROM l
)
SELECT count(*) FROM l

-- Set a flag, optionally ask running jobs of that type to cancel, and audit
-- it, in one statement (so in one transaction).
-- $1 name, $2 enabled, $3 reason, $4 updated by, $5 cancel running jobs.
WITH flag AS (
    INSERT INTO ops_feature_flags (name, enabled, reason, updated_by, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (name) DO UPDATE
    SET enabled = EXCLUDED.enabled,
        reason = EXCLUDED.reason,
        updated_by = EXCLUDED.updated_by,
        updated_at = now()
    RETURNING name
), cancelled AS (
    UPDATE ops_jobs
    SET cancel_requested = true,
        cancel_requested_at = now(),
        cancel_reason = left('flag ' || $1 || ' disabled' || coalesce(': ' || $3, ''), 500)
    WHERE $5 AND NOT $2 AND job_type = $1 AND status = 'running' AND NOT cancel_requested
    RETURNING id
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, detail)
    SELECT $4, CASE WHEN $2 THEN 'flag.enable' ELSE 'flag.disable' END, $1,
           jsonb_build_object('reason', $3::text, 'cancel_running', $5,
                              'cancelled_jobs', (SELECT count(*) FROM cancelled))
    FROM flag
)
SELECT count(*) FROM cancelled

-- The shim's cancellation: like cancel_job.sql, bound to one tenant, with the
-- tenant in the audit row. $1 id, $2 reason, $3 actor, $4 tenant.
WITH req AS (
    UPDATE ops_jobs
    SET cancel_requested = true,
        cancel_requested_at = coalesce(cancel_requested_at, now()),
        cancel_reason = coalesce($2, cancel_reason),
        status = CASE WHEN status = 'queued' THEN 'cancelled'::ops_job_status ELSE status END,
        error = CASE WHEN status = 'queued'
                     THEN left('cancelled before start' || coalesce(': ' || $2, ''), 500)
                     ELSE error END,
        finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
    WHERE id = $1
      AND tenant_id = $4
      AND status IN ('queued', 'running')
    RETURNING id, status
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
    SELECT $3, 'job.cancel', req.id::text, $4,
           jsonb_build_object('reason', $2::text, 'status', req.status, 'via', 'api')
    FROM req
)
SELECT status::text FROM req

-- Put a failed or cancelled job back into the queue as new: attempts reset,
-- result, error and cancellation cleared, runnable now. Audited.
-- $1 id, $2 reason, $3 actor. No row when the job is not failed or cancelled.
WITH req AS (
    UPDATE ops_jobs
    SET status = 'queued',
        attempt = 0,
        run_at = now(),
        result = NULL,
        error = NULL,
        cancel_requested = false,
        cancel_requested_at = NULL,
        cancel_reason = NULL,
        lease_owner = NULL,
        lease_expires_at = NULL,
        started_at = NULL,
        finished_at = NULL
    WHERE id = $1
      AND status IN ('failed', 'cancelled')
    RETURNING id, tenant_id
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
    SELECT $3, 'job.retry', req.id::text, req.tenant_id, jsonb_build_object('reason', $2::text)
    FROM req
)
SELECT id FROM req

-- Request cancellation of one job of any tenant, and audit it: operators'
-- (the CLI's). The shim cancels through ops_api_cancel() (migration 0009),
-- the same statement bound to one tenant, since its role may not update
-- jobs. A queued job is cancelled on the spot; a running one is flagged, and
-- its worker stops it (NOTIFY, with the heartbeat as backstop).
-- $1 id, $2 reason, $3 actor, $4 where the request came from ('cli', ...).
-- Returns the status after the request; no row when the job is not found
-- (for that tenant) or already finished.
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
      AND status IN ('queued', 'running')
    RETURNING id, status, tenant_id
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
    SELECT $3, 'job.cancel', req.id::text, req.tenant_id,
           jsonb_build_object('reason', $2::text, 'status', req.status, 'via', $4::text)
    FROM req
)
SELECT status::text FROM req

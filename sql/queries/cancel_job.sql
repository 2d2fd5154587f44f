-- Request cancellation of one job, and audit it. A queued job is cancelled on
-- the spot; a running one is flagged, and its worker stops it (NOTIFY, with
-- the heartbeat as backstop). $1 id, $2 reason, $3 actor.
-- Returns the status after the request; no row when the job is not found or
-- already finished.
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
    RETURNING id, status
), audit AS (
    INSERT INTO ops_audit_log (actor, action, target, detail)
    SELECT $3, 'job.cancel', req.id::text, jsonb_build_object('reason', $2::text, 'status', req.status)
    FROM req
)
SELECT status::text FROM req

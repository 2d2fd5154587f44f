-- Cancel queued jobs whose cancellation was requested before they started.
-- $1 batch size.
WITH doomed AS (
    SELECT id
    FROM ops_jobs
    WHERE status = 'queued' AND cancel_requested
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ops_jobs AS j
SET status = 'cancelled',
    error = 'cancelled before start',
    finished_at = now()
FROM doomed
WHERE j.id = doomed.id
RETURNING j.id

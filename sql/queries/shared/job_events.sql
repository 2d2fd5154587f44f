-- A job's whole transition trail, oldest first. $1 job id.
--
-- Since schema v10 the happy steps are not stored as events: the row shows
-- them (started_at for the current attempt, finished_at for a success), and
-- every stored event that ends an attempt carries that attempt's start
-- (attempt_started_at). This rebuilds the trail as v9 stored it: each
-- attempt's queued -> running, the stored events (failures, cancels,
-- retries, rescues, operator changes), and the final running -> succeeded.
-- Also the console's job page, as the shim's role: it names only columns
-- that role may read, and sees the events of its tenant's jobs alone.
WITH j AS (
    SELECT id, status, attempt, lease_owner, started_at, finished_at, dry_run
    FROM ops_jobs WHERE id = $1
), e AS (
    SELECT id, from_status, to_status, attempt, worker, detail, at, attempt_started_at
    FROM ops_job_events WHERE job_id = $1
)
SELECT from_status, to_status, attempt, worker, detail, at
FROM (
    -- The start of each attempt that a stored event ended.
    SELECT 'queued' AS from_status, 'running' AS to_status, e.attempt, e.worker,
           NULL::text AS detail, e.attempt_started_at AS at, e.id AS seq, 0 AS step
    FROM e WHERE e.attempt_started_at IS NOT NULL
    UNION ALL
    SELECT e.from_status::text, e.to_status::text, e.attempt, e.worker, e.detail, e.at, e.id, 1
    FROM e
    UNION ALL
    -- The current attempt's start, while it runs or once it succeeded
    -- (unless stored: jobs that ran before v10 have every step stored).
    SELECT 'queued', 'running', j.attempt, j.lease_owner, NULL, j.started_at, NULL, 2
    FROM j WHERE j.status IN ('running', 'succeeded') AND j.started_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM e WHERE e.to_status = 'running' AND e.attempt = j.attempt)
    UNION ALL
    SELECT 'running', 'succeeded', j.attempt, j.lease_owner,
           CASE WHEN j.dry_run THEN 'dry run: validated, nothing executed' END, j.finished_at, NULL, 3
    FROM j WHERE j.status = 'succeeded' AND j.finished_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM e WHERE e.to_status = 'succeeded')
) AS trail
ORDER BY at, seq NULLS LAST, step

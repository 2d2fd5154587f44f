-- What became of slot $2 of schedule $1: $3 enqueued|skipped|run_now, $4
-- the job, $5 why (skipped). A slot recorded before keeps its record.
-- Then only the latest 500 records of the schedule are kept.
WITH ins AS (
    INSERT INTO ops_schedule_slots (schedule, slot, outcome, job_id, reason)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (schedule, slot) DO NOTHING
)
DELETE FROM ops_schedule_slots
WHERE schedule = $1
  AND slot < (SELECT slot FROM ops_schedule_slots WHERE schedule = $1
              ORDER BY slot DESC OFFSET 499 LIMIT 1)

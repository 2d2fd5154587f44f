-- After handling a schedule's due slots (same transaction): $1 name, $2 the
-- next slot not yet handled, $3 the last slot handled (NULL: none
-- enqueued), $4 its job, $5 slots passed over by the catch-up policy.
UPDATE ops_schedules
SET next_slot = $2,
    last_slot = coalesce($3, last_slot),
    last_job_id = coalesce($4, last_job_id),
    last_enqueued_at = CASE WHEN $4::uuid IS NULL THEN last_enqueued_at ELSE now() END,
    missed_slots = missed_slots + $5
WHERE name = $1

-- `schedules enable|disable`: $1 name, $2 enabled, $3 who; re-enabling
-- sets the next slot ($4, computed from now) so that the time it was off is
-- not caught up. Only CLI-owned schedules: no row for a config-owned one.
UPDATE ops_schedules
SET enabled = $2, updated_at = now(), updated_by = $3,
    next_slot = CASE WHEN $2 AND NOT enabled THEN $4 ELSE next_slot END
WHERE name = $1 AND source = 'cli'
RETURNING name

-- The console's schedule Enable/Disable (migration 0014): $1 name, $2
-- enabled, $3 the next slot when re-enabled, $4 who. False when no
-- CLI-made schedule has the name.
SELECT ops_api_schedule_set_enabled($1, $2, $3, $4)

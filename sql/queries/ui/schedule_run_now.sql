-- The console's schedule Run now (migration 0014): $1 name, $2 who. The
-- new job's id; NULL when there is no such schedule.
SELECT ops_api_schedule_run_now($1, $2)

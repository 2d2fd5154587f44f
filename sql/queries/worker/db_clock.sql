-- The database's clock, to measure this daemon's offset from it (exported
-- as opsrunner_db_clock_offset_seconds). clock_timestamp(), not now(): the
-- time of the reading itself. No parameters.
SELECT extract(epoch FROM clock_timestamp())::float8

-- Serialises `opsrunner migrate` runs (and daemons that migrate at start)
-- on one database: a session-level advisory lock, held across the
-- migrations' transactions. $1 the lock key ("opsrmigr").
SELECT pg_advisory_lock($1)

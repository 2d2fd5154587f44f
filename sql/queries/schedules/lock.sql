-- Makes the daemons take turns at applying the config file's schedules: a
-- transaction-level advisory lock, released at commit (the tick takes the
-- same key without waiting, worker/try_lead.sql). $1 the lock key.
SELECT pg_advisory_xact_lock($1)

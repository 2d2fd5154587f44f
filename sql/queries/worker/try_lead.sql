-- Election for one transaction: true when this daemon got the advisory lock
-- $1 (released at commit or rollback, so a crashed leader never keeps it).
SELECT pg_try_advisory_xact_lock($1)

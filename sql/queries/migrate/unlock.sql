-- Releases lock.sql's advisory lock, also after a failed migration, so that
-- a retry does not wait for ever. $1 the lock key.
SELECT pg_advisory_unlock($1)

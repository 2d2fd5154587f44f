-- One retention batch. Finished jobs older than $1 seconds (succeeded),
-- $2 seconds (failed) or $3 seconds (cancelled), audit rows older than
-- $4 seconds, at most $5 of each. The cutoffs are taken from the database's
-- clock: a daemon whose clock is off must not delete early. ops_prune runs as
-- its owner (the worker's role may only EXECUTE it).
SELECT jobs_deleted, events_deleted, audit_deleted
FROM ops_prune(now() - make_interval(secs => $1::float8),
               now() - make_interval(secs => $2::float8),
               now() - make_interval(secs => $3::float8),
               now() - make_interval(secs => $4::float8), $5)

-- One retention batch. $1 finished jobs older than this many seconds,
-- $2 audit rows older than this many seconds, $3 batch size. The cutoffs
-- are taken from the database's clock: a daemon whose clock is off must not
-- delete early.
SELECT jobs_deleted, events_deleted, audit_deleted
FROM ops_prune(now() - make_interval(secs => $1::float8),
               now() - make_interval(secs => $2::float8), $3)

-- One retention batch. $1 finished jobs older than this, $2 audit rows older
-- than this, $3 batch size.
SELECT jobs_deleted, events_deleted, audit_deleted FROM ops_prune($1, $2, $3)

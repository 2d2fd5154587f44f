-- The console's audit page (admin sessions): the newest entries, keyset on
-- the id: $1 the id of the last row of the previous page (NULL = newest),
-- $2 page size.
SELECT id, at, actor, action, target, tenant_id, detail
FROM ops_audit_log
WHERE $1::bigint IS NULL OR id < $1
ORDER BY id DESC
LIMIT $2

-- Whether job $1 of tenant $2 exists at all (cancel tells "already finished"
-- from "not found" with it).
SELECT 1 FROM ops_jobs WHERE id = $1 AND tenant_id = $2

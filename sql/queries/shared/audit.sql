-- Append one audit row. $1 actor, $2 action, $3 target, $4 tenant, $5 detail.
INSERT INTO ops_audit_log (actor, action, target, tenant_id, detail)
VALUES (left($1, 200), $2, left($3, 200), left($4, 200), $5)

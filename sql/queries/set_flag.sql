-- $1 name, $2 enabled, $3 reason, $4 updated by.
INSERT INTO ops_feature_flags (name, enabled, reason, updated_by, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (name) DO UPDATE
SET enabled = EXCLUDED.enabled,
    reason = EXCLUDED.reason,
    updated_by = EXCLUDED.updated_by,
    updated_at = now()

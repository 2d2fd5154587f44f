-- The table that records which migrations were applied; made by the first
-- `opsrunner migrate`. No parameters.
CREATE TABLE IF NOT EXISTS ops_schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

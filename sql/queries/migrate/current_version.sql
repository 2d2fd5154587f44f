-- The schema version: the newest applied migration, 0 for none.
-- No parameters.
SELECT coalesce(max(version), 0) FROM ops_schema_migrations

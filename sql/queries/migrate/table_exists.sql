-- Whether the database was ever migrated (the migrations table exists).
-- No parameters.
SELECT to_regclass('ops_schema_migrations') IS NOT NULL

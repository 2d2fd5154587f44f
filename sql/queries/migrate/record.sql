-- Records one applied migration, in the migration's own transaction.
-- $1 version, $2 name.
INSERT INTO ops_schema_migrations (version, name) VALUES ($1, $2)

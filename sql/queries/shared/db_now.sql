-- The database's now(), in Unix seconds: the clock policy tokens are
-- checked against, whatever the clock of the machine asking. No parameters.
SELECT extract(epoch FROM now())::float8

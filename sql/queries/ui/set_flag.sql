-- The console's flag switch (migration 0014, ops_api_set_flag): $1 name,
-- $2 enabled, $3 reason, $4 who. Audited.
SELECT ops_api_set_flag($1, $2, $3, $4)

-- One batch of a bulk retry or cancel (migration 0014, ops_bulk_batch):
-- $1 action (retry|cancel), $2 tenant (NULL = every tenant, operators
-- only), $3 status, $4 job type, $5 queue (NULL = any), $6 changed or
-- created since (NULL = any time), $7 the last id of the previous batch
-- (NULL = from the start), $8 batch size, $9 reason. The ids changed.
SELECT id FROM ops_bulk_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)

-- `schedules remove`: $1 name, $2 source ('cli' from the CLI, 'config' when
-- a config entry went away). Its slot records go with it; its jobs stay.
DELETE FROM ops_schedules WHERE name = $1 AND source = $2 RETURNING name

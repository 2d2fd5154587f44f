-- Liveness probe: the LISTEN connection's keep-alive and the shim's
-- systemd watchdog ping (sent only while the database answers).
-- No parameters.
SELECT 1

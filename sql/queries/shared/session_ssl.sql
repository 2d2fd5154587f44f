-- Whether this session's connection is encrypted (start-up warns about
-- plaintext to a host that is not this machine). No parameters.
SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)

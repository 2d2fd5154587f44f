-- The oldest snapshot held elsewhere that keeps dead row versions of this
-- database alive: sessions of this database with a backend_xmin (an open
-- transaction or a running statement), and replication slots (any
-- database). Every SKIP LOCKED claim steps over what such a snapshot keeps,
-- so claims slow in proportion to the jobs processed since it was taken.
-- Sessions of other roles are visible only to members of pg_read_all_stats
-- (pg_monitor). No parameters.
SELECT coalesce(extract(epoch FROM now() - min(coalesce(a.xact_start, a.query_start))), 0)::float8
           AS session_age_secs,
       (array_agg(a.application_name ORDER BY coalesce(a.xact_start, a.query_start)))[1]
           AS oldest_application,
       (SELECT coalesce(max(greatest(age(s.xmin), age(s.catalog_xmin))), 0)::int8
        FROM pg_replication_slots s) AS slot_xmin_age
FROM pg_stat_activity a
WHERE a.backend_xmin IS NOT NULL
  AND a.pid <> pg_backend_pid()
  AND a.datname = current_database()

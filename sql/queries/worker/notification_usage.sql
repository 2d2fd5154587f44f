-- How full the cluster's NOTIFY queue is (0..1): a full queue stops every
-- NOTIFY in the cluster. A look at shared memory, cheap. No parameters.
SELECT pg_notification_queue_usage()

-- Queued jobs for the systemd STATUS= line, counted up to 10,001 so that the
-- cost stays bounded however deep the queue (the caller prints "10000+").
-- No parameters.
SELECT count(*) FROM (SELECT 1 FROM ops_jobs WHERE status = 'queued' LIMIT 10001) q

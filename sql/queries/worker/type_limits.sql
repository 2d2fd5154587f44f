-- Every per-type concurrency limit, reloaded with the flags. No parameters.
SELECT job_type, max_running FROM ops_type_limits

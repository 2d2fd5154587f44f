-- The last statement of a limited type's claim, when it has a rate limit
-- or claims fairly: the rate window after this claim's starts and the
-- tenant a fair claim served last. Names only state columns, so it does
-- not announce a settings change (the NOTIFY trigger lists the settings).
-- $1 job type, $2 window start (epoch seconds), $3 starts in it, $4 starts
-- in the window before, $5 the tenant served last.
UPDATE ops_type_limits
SET rate_window_start = to_timestamp($2::float8),
    rate_window_count = $3,
    rate_previous_count = $4,
    fair_after = $5
WHERE job_type = $1

-- `opsrunner limits set` with a fair or per-tenant rule: builds the fair
-- claim's index over the queued rows unless it exists (schema v16's
-- ops_ensure_fair_index). True when it was built now. No parameters.
SELECT ops_ensure_fair_index()

-- The feature flags that are on, for the worker's flag cache (NOTIFY on
-- ops_flags and a periodic reload). No parameters.
SELECT name FROM ops_feature_flags WHERE enabled

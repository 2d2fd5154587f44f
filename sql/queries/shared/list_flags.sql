-- Every feature flag, for `opsrunner flags list`. No parameters.
SELECT name, enabled, reason, updated_at, updated_by FROM ops_feature_flags ORDER BY name

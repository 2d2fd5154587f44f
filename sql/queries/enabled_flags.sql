SELECT name FROM ops_feature_flags WHERE enabled

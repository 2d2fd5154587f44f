-- Console sign-out: session of token hash $1 ends now.
UPDATE ops_ui_sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL

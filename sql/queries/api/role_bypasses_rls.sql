-- Whether the shim's login role escapes row-level security (superuser or
-- BYPASSRLS); the shim warns at start-up. No parameters.
SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user

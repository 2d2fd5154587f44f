-- opsrunner schema v4: the HTTP shim: scoped API keys, policy tokens,
-- tenant isolation by row-level security, a tenant column on the audit log.

-- An action job carries the signed policy token that allowed it; the worker
-- verifies it again before running, since rows can be inserted by plain SQL.
-- Never returned by the shim nor printed by the CLI.
ALTER TABLE ops_jobs
    ADD COLUMN policy_token text CHECK (char_length(policy_token) <= 4096);

-- Only a SHA-256 of each key is stored; the key itself is shown once, at
-- creation. `key_prefix` (the first characters) lets an operator tell keys
-- apart without the key.
CREATE TABLE ops_api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    key_hash    bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    key_prefix  text NOT NULL CHECK (char_length(key_prefix) <= 32),
    scopes      text[] NOT NULL
                CHECK (cardinality(scopes) >= 1
                       AND scopes <@ ARRAY['jobs:read', 'jobs:write', 'jobs:cancel']::text[]),
    tenant_id   text NOT NULL CHECK (char_length(tenant_id) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text CHECK (char_length(created_by) <= 200),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

ALTER TABLE ops_audit_log
    ADD COLUMN tenant_id text CHECK (char_length(tenant_id) <= 200);
CREATE INDEX ops_audit_log_action_idx ON ops_audit_log (action, at);

-- Tenant isolation. A session sees and writes only the rows of the tenant
-- named by `SET LOCAL app.tenant_id`; with it unset, no row at all. The table
-- owner is exempt until `sql/roles/roles.sql` (run by a DBA) forces the policy
-- on every role and grants the worker role its own policy. Superusers and
-- BYPASSRLS roles are always exempt: never run the shim as one.
ALTER TABLE ops_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY ops_jobs_tenant_isolation ON ops_jobs
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

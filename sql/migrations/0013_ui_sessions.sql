-- opsrunner schema v13: sessions of the operator console (/ui).
--
-- A sign-in exchanges an API key for a random session token, kept in an
-- HttpOnly cookie; only its SHA-256 is stored here. The session carries the
-- key's tenant and scopes; every request re-checks the key (a revoked or
-- expired key ends its sessions at once: the lookup joins ops_api_keys), the
-- idle and absolute expiry, and sign-out.

CREATE TABLE ops_ui_sessions (
    token_hash   bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    -- NULL for the master key.
    key_id       uuid REFERENCES ops_api_keys (id) ON DELETE CASCADE,
    tenant_id    text NOT NULL CHECK (char_length(tenant_id) BETWEEN 1 AND 200),
    scopes       text[] NOT NULL,
    actor        text NOT NULL CHECK (char_length(actor) <= 300),
    -- The form token every POST of this session must carry.
    csrf_token   text NOT NULL CHECK (char_length(csrf_token) = 64),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

CREATE INDEX ops_ui_sessions_expires_idx ON ops_ui_sessions (expires_at);

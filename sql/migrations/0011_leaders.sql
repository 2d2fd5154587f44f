-- opsrunner schema v11: a leadership lease for the daemon that exports the
-- cluster-wide gauges (queue depth and age, snapshot age, NOTIFY queue).
--
-- Until v10 those were published by whichever daemon took a
-- transaction-scoped advisory lock on its maintenance tick. The lock is held
-- for milliseconds, so nearly every daemon's tick took it and every daemon
-- exported the gauges: a sum over instances multiplied them. A lease row
-- keeps one daemon leader until it stops renewing (crash, stall, shutdown):
-- `expires_at` is three maintenance intervals ahead at each renewal, a
-- daemon that finds it expired (or its own) takes it, and a stopping daemon
-- deletes it so the next one takes over at its next tick.
--
-- The rescuer keeps its per-tick advisory lock: rescuing is safe from any
-- daemon, and does not wait for a lease to expire.

CREATE TABLE ops_leaders (
    name       text PRIMARY KEY,
    owner      text NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

COMMENT ON TABLE ops_leaders IS
    'Leadership leases: one row per role (maintenance), held by one daemon (owner = host:pid:random) until expires_at.';

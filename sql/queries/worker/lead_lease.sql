-- Takes or renews the leadership lease $1 for owner $2, for $3 seconds:
-- a row comes back when $2 leads after this statement (it already held the
-- lease, or the lease had expired or did not exist), none when another
-- daemon holds an unexpired lease. elected_at moves only on a change of
-- owner.
INSERT INTO ops_leaders AS l (name, owner, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
    SET owner = excluded.owner,
        elected_at = CASE WHEN l.owner = excluded.owner THEN l.elected_at ELSE now() END,
        renewed_at = now(),
        expires_at = excluded.expires_at
    WHERE l.owner = excluded.owner OR l.expires_at < now()
RETURNING owner

-- Gives up the leadership lease $1 if owner $2 holds it (at shutdown), so
-- that another daemon takes over at its next tick instead of after expiry.
DELETE FROM ops_leaders WHERE name = $1 AND owner = $2

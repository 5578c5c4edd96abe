-- Replicas (issue 18). Leases name who runs a flow's runs until when; the
-- token grows each time a lease changes owner and fences cursor and delivery
-- writes. Owners are replica ids (host, pid, a random suffix): no personal data.
-- Expiry is decided by the database's clock (`bridge_stamp(now())`), so
-- replicas whose clocks disagree still agree on who holds what.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    token       BIGINT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

-- An inbox message is processed by whoever holds a live claim on it; a
-- crashed claimant's claim expires and another replica claims it again (the
-- token moves on, fencing the first one's writes).
ALTER TABLE inbox ADD COLUMN claimed_by TEXT;
ALTER TABLE inbox ADD COLUMN claim_expires_at TEXT;
ALTER TABLE inbox ADD COLUMN claim_token BIGINT NOT NULL DEFAULT 0;

-- Cluster-wide partner limits: call slots (max_in_flight) and the next free
-- send time of a rate (rate_per_sec), shared by every replica.
CREATE TABLE partner_slots (
    scope      TEXT NOT NULL,
    slot       BIGINT NOT NULL,
    owner      TEXT,
    expires_at TEXT,
    PRIMARY KEY (scope, slot)
);
CREATE TABLE partner_rates (
    scope  TEXT PRIMARY KEY,
    -- Theoretical arrival time of the next call, Unix microseconds.
    tat_us BIGINT NOT NULL
);

-- A time as the bridge stores it: RFC 3339 UTC with milliseconds (what
-- `bridge_store::now()` gives on the replicas), so stored times compare as text.
CREATE FUNCTION bridge_stamp(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Consent safeguards (issue 16). Ids and timestamps only.

-- Every Primero case the bridge shared (either direction), so a later loss
-- of consent on it raises one alert. `revoked_at` is set when the loss is
-- seen and cleared when consent is recorded again (a second loss alerts again).
CREATE TABLE shared_cases (
    case_id         TEXT PRIMARY KEY,
    first_flow      TEXT NOT NULL,
    first_shared_at TEXT NOT NULL,
    revoked_at      TEXT
);

-- Alerts for the operator's manual procedures (e.g. consent revoked after a
-- share), delivered to the optional webhook with retries. Kept after
-- delivery: they are the operator's record of what was raised.
CREATE TABLE alerts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL,
    flow            TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    raised_at       TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT
);
CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE delivered_at IS NULL;

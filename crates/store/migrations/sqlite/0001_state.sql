-- Durable state of the bridge. System ids, statuses, timestamps and reason
-- codes only: never a name, a date of birth, a phone number or case text.

-- Per-flow cursor (e.g. greatest Primero last_updated_at processed).
CREATE TABLE cursors (
    flow       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- What was last delivered for a key (e.g. a decision on a case service), so a
-- record is sent once and sent again only when it changed.
CREATE TABLE deliveries (
    flow         TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    target_id    TEXT,
    delivered_at TEXT NOT NULL,
    PRIMARY KEY (flow, record_key)
);

-- Inbox messages accepted but not yet synced. The body is sealed (AEAD) and
-- deleted as soon as the message is processed.
CREATE TABLE inbox (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    sealed_body BLOB NOT NULL,
    received_at TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);

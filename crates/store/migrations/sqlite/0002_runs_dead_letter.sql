-- Runs, per-record outcomes, attempt counts and the dead letter.
-- System ids, statuses, reason codes and timestamps only.

CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    flow           TEXT NOT NULL,
    -- schedule | startup | manual | inbox | replay
    trigger_kind   TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    ended_at       TEXT,
    fetched        INTEGER NOT NULL DEFAULT 0,
    delivered      INTEGER NOT NULL DEFAULT 0,
    held           INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    dead_lettered  INTEGER NOT NULL DEFAULT 0,
    -- running | ok | partial | aborted | interrupted
    outcome        TEXT NOT NULL,
    aborted_reason TEXT
);
CREATE INDEX runs_by_flow ON runs (flow, started_at);

CREATE TABLE record_outcomes (
    run_id      TEXT NOT NULL,
    flow        TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    target_id   TEXT,
    status      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    reason_code TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX record_outcomes_by_run ON record_outcomes (run_id);
CREATE INDEX record_outcomes_by_source ON record_outcomes (flow, source_id);

-- Consecutive failed attempts of a record across runs.
CREATE TABLE attempts (
    flow       TEXT NOT NULL,
    source_id  TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    last_code  TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (flow, source_id)
);

-- Records that failed too often. Active while replayed_at is NULL. For an
-- inbox message the sealed body stays in `inbox` (state 'dead') until replay.
CREATE TABLE dead_letter (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    flow        TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    -- Where a cursor flow must read from to see the record again.
    cursor_hint TEXT,
    created_at  TEXT NOT NULL,
    replayed_at TEXT
);
CREATE UNIQUE INDEX dead_letter_active ON dead_letter (flow, source_id) WHERE replayed_at IS NULL;

ALTER TABLE inbox ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';

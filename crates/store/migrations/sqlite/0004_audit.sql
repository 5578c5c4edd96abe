-- The audit trail (issue 16): one entry per record shared or refused on
-- consent. Ids and codes only. Each entry carries the hash of the one before
-- it (crates/store/src/audit.rs documents the encoding), so a changed,
-- removed or reordered entry is detected by `bridge audit verify`.

CREATE TABLE audit (
    -- Assigned by the appender: the head's seq + 1, inside the append's
    -- write transaction, so the chain continues across processes.
    seq           INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    flow          TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    event         TEXT NOT NULL
                  CHECK (event IN ('delivered', 'refused-no-consent', 'consent-revoked')),
    source_id     TEXT NOT NULL,
    target_id     TEXT,
    case_id       TEXT,
    permitted_by  TEXT,
    consent       TEXT NOT NULL
                  CHECK (consent IN ('recorded', 'overridden', 'not-transmitted', 'absent')),
    job           TEXT NOT NULL,
    job_version   TEXT NOT NULL,
    job_hash      TEXT NOT NULL,
    mappings_hash TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_by_at ON audit (at);
CREATE INDEX audit_by_case ON audit (case_id);
CREATE INDEX audit_by_flow ON audit (flow, at);

-- The newest entry (seq, hash), updated in the same transaction as every
-- append: a removed tail entry no longer matches it. The anchor (pruned_*)
-- is the last entry retention removed: the first remaining entry links to it.
CREATE TABLE audit_head (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    seq           INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    pruned_seq    INTEGER NOT NULL,
    pruned_hash   TEXT NOT NULL,
    -- The retention cut-off of the last prune, and when it ran.
    pruned_before TEXT,
    pruned_at     TEXT,
    -- 1 only inside a prune's transaction: the one way entries are deleted.
    pruning       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO audit_head (id, seq, hash, pruned_seq, pruned_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
        0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only. These refuse accidents (a hand-written UPDATE or DELETE); a
-- determined editor can drop them, which is what the hash chain and the head
-- an auditor notes down are for.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN (SELECT pruning FROM audit_head WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: entries leave only through `bridge audit prune`');
END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'the audit head cannot be deleted');
END;
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
WHEN NEW.seq < OLD.seq OR NEW.pruned_seq < OLD.pruned_seq
BEGIN
    SELECT RAISE(ABORT, 'the audit head only moves forward');
END;

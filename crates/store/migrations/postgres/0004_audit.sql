-- The audit trail (issue 16): one entry per record shared or refused on
-- consent. Ids and codes only. Each entry carries the hash of the one before
-- it (crates/store/src/audit.rs documents the encoding), so a changed,
-- removed or reordered entry is detected by `bridge audit verify`.

CREATE TABLE audit (
    -- Assigned by the appender: the head's seq + 1, inside the append's
    -- transaction, which holds the head row's lock (SELECT … FOR UPDATE), so
    -- the chain continues across processes.
    seq           BIGINT PRIMARY KEY,
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
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    seq           BIGINT NOT NULL,
    hash          TEXT NOT NULL,
    pruned_seq    BIGINT NOT NULL,
    pruned_hash   TEXT NOT NULL,
    -- The retention cut-off of the last prune, and when it ran.
    pruned_before TEXT,
    pruned_at     TEXT,
    -- 1 only inside a prune's transaction: the one way entries are deleted.
    pruning       BIGINT NOT NULL DEFAULT 0
);
INSERT INTO audit_head (id, seq, hash, pruned_seq, pruned_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
        0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only. These refuse accidents (a hand-written UPDATE or DELETE); a
-- determined editor can drop them, which is what the hash chain and the head
-- an auditor notes down are for.
CREATE FUNCTION audit_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_no_update();

CREATE FUNCTION audit_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT pruning FROM audit_head WHERE id = 1) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'the audit trail is append-only: entries leave only through `bridge audit prune`';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_no_delete();

CREATE FUNCTION audit_head_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit head cannot be deleted';
END $$;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
FOR EACH ROW EXECUTE FUNCTION audit_head_no_delete();
-- TRUNCATE skips row triggers: refused on its own.
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_no_update();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
FOR EACH STATEMENT EXECUTE FUNCTION audit_head_no_delete();

CREATE FUNCTION audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq < OLD.seq OR NEW.pruned_seq < OLD.pruned_seq THEN
        RAISE EXCEPTION 'the audit head only moves forward';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
FOR EACH ROW EXECUTE FUNCTION audit_head_forward();

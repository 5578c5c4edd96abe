//! Rows as both backends return them: one decoder per type, generic over
//! the sqlx row, so SQLite and PostgreSQL give the same values.

use sqlx::Row;

use super::{Alert, DeadLetter, InboxMessage, RecordRow, RunRow};

/// A decoder of a row of either backend, by column position.
macro_rules! row_fn {
    ($(#[$m:meta])* fn $name:ident($r:ident) -> $ty:ty $body:block) => {
        $(#[$m])*
        pub(crate) fn $name<R>($r: &R) -> $ty
        where
            R: Row,
            usize: sqlx::ColumnIndex<R>,
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        $body
    };
}

pub(crate) const RUN_COLUMNS: &str =
    "SELECT id, flow, trigger_kind, started_at, ended_at, fetched, delivered, held,
    skipped, failed, dead_lettered, outcome, aborted_reason, job_hash, mappings_hash, lease_token FROM runs";

row_fn! {
    fn run_row(r) -> RunRow {
        RunRow {
            id: r.get(0),
            flow: r.get(1),
            trigger: r.get(2),
            started_at: r.get(3),
            ended_at: r.get(4),
            fetched: r.get(5),
            delivered: r.get(6),
            held: r.get(7),
            skipped: r.get(8),
            failed: r.get(9),
            dead_lettered: r.get(10),
            outcome: r.get(11),
            aborted_reason: r.get(12),
            job_hash: r.get(13),
            mappings_hash: r.get(14),
            lease_token: r.get(15),
        }
    }
}

pub(crate) const DEAD_LETTER_COLUMNS: &str =
    "SELECT id, flow, source_id, reason_code, reason, attempts,
    cursor_hint, created_at, replayed_at FROM dead_letter";

row_fn! {
    fn dead_letter_row(r) -> DeadLetter {
        DeadLetter {
            id: r.get(0),
            flow: r.get(1),
            source_id: r.get(2),
            reason_code: r.get(3),
            reason: r.get(4),
            attempts: r.get(5),
            cursor_hint: r.get(6),
            created_at: r.get(7),
            replayed_at: r.get(8),
        }
    }
}

pub(crate) const INBOX_COLUMNS: &str =
    "SELECT id, kind, sealed_body, received_at, attempts, api_key_id, claimed_by FROM inbox";

row_fn! {
    fn inbox_row(r) -> InboxMessage {
        InboxMessage {
            id: r.get(0),
            kind: r.get(1),
            sealed_body: r.get(2),
            received_at: r.get(3),
            attempts: r.get(4),
            api_key_id: r.get(5),
            claimed_by: r.get(6),
        }
    }
}

pub(crate) const RECORD_COLUMNS: &str =
    "SELECT run_id, flow, source_id, target_id, status, attempt, reason_code, at, reason
     FROM record_outcomes";

row_fn! {
    fn record_row(r) -> RecordRow {
        RecordRow {
            run_id: r.get(0),
            flow: r.get(1),
            source_id: r.get(2),
            target_id: r.get(3),
            status: r.get(4),
            attempt: r.get(5),
            reason_code: r.get(6),
            reason: r.get(8),
            at: r.get(7),
        }
    }
}

pub(crate) const ALERT_COLUMNS: &str = "id, kind, flow, run_id, case_id, raised_at, attempts, next_attempt_at, delivered_at, last_error";

row_fn! {
    fn alert_row(r) -> Alert {
        Alert {
            id: r.get(0),
            kind: r.get(1),
            flow: r.get(2),
            run_id: r.get(3),
            case_id: r.get(4),
            raised_at: r.get(5),
            attempts: r.get(6),
            next_attempt_at: r.get(7),
            delivered_at: r.get(8),
            last_error: r.get(9),
        }
    }
}

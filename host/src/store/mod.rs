//! Durable state: cursors, what was delivered, and the sealed inbox.
//!
//! Behind the [`Store`] trait so a PostgreSQL backend can follow without
//! touching the flows. The embedded default is SQLite ([`SqliteStore`]).
//! Only system ids, fingerprints, statuses and timestamps are stored; inbox
//! bodies are sealed with [`Sealer`] and deleted once processed.

mod seal;
mod sqlite;

pub use seal::{SealError, Sealer};
pub use sqlite::SqliteStore;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Database(String),
    #[error("state database migration: {0}")]
    Migration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// A message accepted by the inbox and not yet processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// Receipt id returned to the sender.
    pub id: String,
    /// Routing kind, e.g. the DTP `request_type`.
    pub kind: String,
    pub sealed_body: Vec<u8>,
    pub received_at: String,
    pub attempts: i64,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The flow's cron schedule.
    Schedule,
    /// A scheduled run missed while the process was down, run once on start.
    Startup,
    /// `bridge flow run` or a test.
    Manual,
    /// A message pushed to the inbox.
    Inbox,
    /// `bridge dead-letter replay`.
    Replay,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Startup => "startup",
            Trigger::Manual => "manual",
            Trigger::Inbox => "inbox",
            Trigger::Replay => "replay",
        }
    }
}

/// One run of a flow as stored. Counts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    pub id: String,
    pub flow: String,
    pub trigger: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub fetched: i64,
    pub delivered: i64,
    pub held: i64,
    pub skipped: i64,
    pub failed: i64,
    pub dead_lettered: i64,
    /// `running`, `ok`, `partial`, `aborted` or `interrupted`.
    pub outcome: String,
    pub aborted_reason: Option<String>,
}

/// The outcome of one record in one run: system ids and a reason code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordRow {
    pub run_id: String,
    pub flow: String,
    pub source_id: String,
    pub target_id: Option<String>,
    /// The outcome label, e.g. `created`, `failed`, `dead-lettered`.
    pub status: String,
    /// Consecutive failed attempts including this one (0 when it succeeded).
    pub attempt: i64,
    pub reason_code: Option<String>,
    pub at: String,
}

/// A record that failed too often and waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub flow: String,
    pub source_id: String,
    pub reason_code: String,
    pub reason: String,
    pub attempts: i64,
    /// Cursor flows: where to read from to see the record again.
    pub cursor_hint: Option<String>,
    pub created_at: String,
    pub replayed_at: Option<String>,
}

/// A previous delivery of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub fingerprint: String,
    pub target_id: Option<String>,
    pub delivered_at: String,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The flow's cursor, if one was committed.
    async fn cursor(&self, flow: &str) -> Result<Option<String>, StoreError>;
    /// Commit a cursor. Callers only do this once every record up to it is
    /// written (or dead-lettered).
    async fn set_cursor(&self, flow: &str, value: &str) -> Result<(), StoreError>;

    /// What was last delivered under `key` (system ids only, e.g.
    /// `<case id>/<service id>`).
    async fn delivery(&self, flow: &str, key: &str) -> Result<Option<Delivery>, StoreError>;
    /// Record a delivery; `fingerprint` identifies the content sent (e.g. a
    /// hash of the decision), so a changed record is sent again.
    async fn record_delivery(
        &self,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Keep an accepted inbox message until it is processed.
    async fn inbox_put(&self, id: &str, kind: &str, sealed_body: &[u8]) -> Result<(), StoreError>;
    /// Messages not yet processed, oldest first.
    async fn inbox_pending(&self) -> Result<Vec<InboxMessage>, StoreError>;
    /// Note a failed processing attempt (reason: codes only).
    async fn inbox_failed(&self, id: &str, reason: &str) -> Result<(), StoreError>;
    /// Delete a processed message (its body goes with it).
    async fn inbox_delete(&self, id: &str) -> Result<(), StoreError>;
    /// Set a message aside (state `dead`): kept sealed for a replay, no
    /// longer pending.
    async fn inbox_set_dead(&self, id: &str, reason: &str) -> Result<(), StoreError>;
    /// Make a dead message pending again with its attempts reset.
    async fn inbox_revive(&self, id: &str) -> Result<bool, StoreError>;
    /// Every stored inbox message id with its state (`pending`/`dead`).
    async fn inbox_states(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// A run began (outcome `running`).
    async fn run_started(&self, run: &RunRow) -> Result<(), StoreError>;
    /// A run ended: counts, outcome, end time; its record outcomes.
    async fn run_finished(&self, run: &RunRow, records: &[RecordRow]) -> Result<(), StoreError>;
    /// Runs still `running` (the process died during them) become
    /// `interrupted`; returns how many.
    async fn interrupt_running(&self) -> Result<u64, StoreError>;
    /// Newest first.
    async fn runs(&self, flow: Option<&str>, limit: i64) -> Result<Vec<RunRow>, StoreError>;
    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError>;
    async fn run_records(&self, run_id: &str) -> Result<Vec<RecordRow>, StoreError>;
    /// Start time of the flow's newest run of any trigger.
    async fn last_run_started(&self, flow: &str) -> Result<Option<String>, StoreError>;

    /// Count one more failed attempt; returns the count so far.
    async fn attempt_failed(
        &self,
        flow: &str,
        source_id: &str,
        code: &str,
    ) -> Result<i64, StoreError>;
    /// Every record of the flow with failed attempts, with the count.
    async fn attempts_all(&self, flow: &str) -> Result<Vec<(String, i64)>, StoreError>;
    /// Consecutive failed attempts so far (0 when none).
    async fn attempts(&self, flow: &str, source_id: &str) -> Result<i64, StoreError>;
    /// The record succeeded (or was replayed): forget its failures.
    async fn clear_attempts(&self, flow: &str, source_id: &str) -> Result<(), StoreError>;

    /// Put a record in the dead letter (no-op when already there).
    async fn dead_letter_put(
        &self,
        flow: &str,
        source_id: &str,
        reason_code: &str,
        reason: &str,
        attempts: i64,
        cursor_hint: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The active dead-letter entry of a record.
    async fn dead_letter_find(
        &self,
        flow: &str,
        source_id: &str,
    ) -> Result<Option<DeadLetter>, StoreError>;
    async fn dead_letter_get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError>;
    /// Active entries (not replayed), oldest first.
    async fn dead_letters(&self, flow: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;
    /// Take an entry out of the dead letter for a replay: marks it replayed
    /// and forgets the record's attempts. False when it was not active.
    async fn dead_letter_release(&self, id: i64) -> Result<bool, StoreError>;
}

/// Now, as stored: RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

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
}

/// Now, as stored: RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

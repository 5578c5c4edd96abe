//! Durable state: cursors, what was delivered, and the sealed inbox.
//!
//! Behind the [`Store`] trait: the embedded default is SQLite
//! ([`SqliteStore`]); several replicas share a PostgreSQL database
//! ([`PostgresStore`], `[state] url`). Both have the same schema (migrations/
//! sqlite and migrations/postgres, numbered alike) and pass the same
//! contract suite (tests/contract).
//! Only system ids, fingerprints, statuses and timestamps are stored; inbox
//! bodies are sealed with [`Sealer`] and deleted once processed.

pub mod audit;
mod cluster;
mod consent;
mod fenced;
mod inserts;
mod lease;
pub mod limits;
mod monitor;
mod postgres;
mod rows;
mod seal;
mod sqlite;
mod sqlite_cluster;

pub use audit::{
    AuditAnchor, AuditEntry, AuditEvent, AuditFilter, AuditProblem, AuditRecord, AuditVerification,
    ConsentBasis, ProblemKind,
};
pub use cluster::{stamp, ClaimedMessage, Fence, Lease};
pub use consent::{Alert, CONSENT_REVOKED};
pub use fenced::Fenced;
pub use lease::{Holder, WriterLease};
pub use monitor::Monitored;
pub use postgres::{redact_url, PostgresStore};
pub use seal::{SealError, Sealer};
pub use sqlite::SqliteStore;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

/// How to restore a lost database; part of every message about one.
const RESTORE_HINT: &str = "restore the database from a backup (see docs/operator/state.md), \
     or start a new deployment with `--init`";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Database(String),
    /// SQLite's SQLITE_FULL: the disk (or the file size limit) is full.
    #[error("state database: the disk is full: {0}")]
    Full(String),
    #[error("state database migration: {0}")]
    Migration(String),
    /// A value the store refuses to keep (e.g. an unknown audit code).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no state database at {0} (key `state.path`): a new deployment creates it with `--init` \
         (e.g. `bridge run --init --config bridge.toml`); if this deployment ran before, its \
         database is lost: restore it from a backup (see docs/operator/state.md)"
    )]
    Missing(PathBuf),
    /// A PostgreSQL database (or schema) without the bridge's tables.
    #[error(
        "the PostgreSQL database {database} (key `state.url`) holds no bridge state in schema \
         `{schema}`: a new deployment creates its tables with `--init` (e.g. `bridge run --init \
         --config bridge.toml`); if this deployment ran before, its tables are lost: restore \
         them from a backup (pg_restore, see docs/operator/state.md)"
    )]
    NoSchema { database: String, schema: String },
    /// A PostgreSQL schema holding another application's tables.
    #[error("the PostgreSQL database {database} (key `state.url`) is not a bridge state database: {why}")]
    ForeignSchema { database: String, why: String },
    #[error("{0} is an empty file, not a bridge state database (truncated?): {RESTORE_HINT}")]
    Empty(PathBuf),
    #[error(
        "{path} is not a bridge state database ({why}): check `state.path`, or {RESTORE_HINT}"
    )]
    Foreign { path: PathBuf, why: String },
    /// The file at the configured path is no longer the one this process
    /// opened (deleted, replaced or moved away): writes would be lost.
    #[error("the state database {path} {why} since this process opened it: stop the bridge and {RESTORE_HINT}")]
    Replaced { path: PathBuf, why: &'static str },
    /// Another process holds the writer lock.
    #[error(
        "the state database {database} is in use by another bridge process ({}): only one \
         process may write it; stop that one first (read-only commands such as `bridge runs` \
         work meanwhile)",
        .holder.as_ref().map_or_else(|| "holder not recorded yet".to_string(), |h| h.to_string())
    )]
    Locked {
        database: String,
        holder: Option<Holder>,
    },
    /// A fenced write from a replica whose lease or claim moved on: refused
    /// so it cannot commit over the replica that took over.
    #[error("refused: {0}")]
    Fenced(String),
}

impl StoreError {
    /// A stable reason code for `/readyz`, metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Database(_) => "store-error",
            StoreError::Full(_) => "store-full",
            StoreError::Migration(_) => "store-migration",
            StoreError::Invalid(_) => "store-invalid",
            StoreError::Missing(_) | StoreError::NoSchema { .. } => "store-missing",
            StoreError::ForeignSchema { .. } => "store-foreign",
            StoreError::Empty(_) => "store-empty",
            StoreError::Foreign { .. } => "store-foreign",
            StoreError::Replaced { .. } => "store-replaced",
            StoreError::Locked { .. } => "store-locked",
            StoreError::Fenced(_) => "store-fenced",
        }
    }
}

/// SQLite's primary result code for a full database or disk.
const SQLITE_FULL: i64 = 13;
/// PostgreSQL's SQLSTATE for a full disk (class 53, insufficient resources).
const PG_DISK_FULL: &str = "53100";

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let full = e.as_database_error().is_some_and(|d| {
            let code = d.code();
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                code.as_deref() == Some(PG_DISK_FULL)
            } else {
                // SQLite reports extended codes; the primary code is the low byte.
                code.and_then(|c| c.parse::<i64>().ok())
                    .is_some_and(|c| c & 0xff == SQLITE_FULL)
            }
        });
        if full {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

/// Whether opening a database may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The database must exist and be a bridge database.
    Existing,
    /// `--init`: create it when missing (an existing one must still be a
    /// bridge database).
    Init,
}

impl OpenMode {
    /// The mode a command's `--init` flag asks for.
    pub fn from_init(init: bool) -> Self {
        if init {
            OpenMode::Init
        } else {
            OpenMode::Existing
        }
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
    /// The id of the API key that authenticated it (`None` before keys had ids).
    pub api_key_id: Option<String>,
    /// The replica that last claimed it for processing (its claim may have
    /// expired).
    pub claimed_by: Option<String>,
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
    /// SHA-256 of the job component the run used (hashes joined by `,` if
    /// it used several), and the mapping folder's content hash.
    pub job_hash: Option<String>,
    pub mappings_hash: Option<String>,
    /// The token of the flow's lease the run started under (`None`: a run
    /// stored before replicas); see [`Store::interrupt_running`].
    pub lease_token: Option<i64>,
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
    /// Why it was not delivered, in full (codes and system ids; job text is
    /// redacted on receipt, see `bridge_runtime::job_text`).
    pub reason: Option<String>,
    pub at: String,
}

impl RunRow {
    /// The run got through its records, whatever their outcomes: what
    /// "last success" means for the gauges and the console.
    pub fn got_through(&self) -> bool {
        self.ended_at.is_some()
            && !matches!(self.outcome.as_str(), "aborted" | "running" | "interrupted")
    }
}

impl RecordRow {
    /// The reason code and the full reason, as one line: `code: reason`, or
    /// the reason alone when it already leads with its code.
    pub fn why(&self) -> Option<String> {
        match (self.reason_code.as_deref(), self.reason.as_deref()) {
            (Some(code), Some(reason)) if !reason.starts_with(code) => {
                Some(format!("{code}: {reason}"))
            }
            (_, Some(reason)) => Some(reason.to_string()),
            (Some(code), None) => Some(code.to_string()),
            (None, None) => None,
        }
    }
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
    /// Become the only writer of this database, until the lease is dropped
    /// (or the process dies). Refused with [`StoreError::Locked`], naming
    /// the holder, while another process holds it. SQLite: an OS lock on a
    /// sidecar file; a shared server database would make it a renewed lease.
    async fn acquire_writer(&self, holder: &Holder) -> Result<WriterLease, StoreError>;
    /// The database is still the one opened and can be used; checked
    /// periodically and before accepting anything that must be kept.
    async fn verify(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Why the database cannot grow, when it cannot: the disk is (nearly)
    /// full, or the file reached the process's file size limit. SQLite
    /// reports the second as a plain I/O error, so a failed write asks.
    fn space_problem(&self) -> Option<String> {
        None
    }
    /// The reason code of the last store failure not yet followed by a
    /// successful write (see [`Monitored`]); `None` when healthy.
    fn fault(&self) -> Option<&'static str> {
        None
    }

    /// The flow's cursor, if one was committed.
    async fn cursor(&self, flow: &str) -> Result<Option<String>, StoreError>;
    /// Commit a cursor. Callers only do this once every record up to it is
    /// written (or dead-lettered).
    async fn set_cursor(&self, flow: &str, value: &str) -> Result<(), StoreError>;

    /// What was last delivered under `key` (system ids only, e.g.
    /// `<case id>/<service id>`).
    async fn delivery(&self, flow: &str, key: &str) -> Result<Option<Delivery>, StoreError>;
    /// [`Store::delivery`] of several keys at once (a page's): those with a
    /// record, by key.
    async fn deliveries(
        &self,
        flow: &str,
        keys: &[String],
    ) -> Result<HashMap<String, Delivery>, StoreError> {
        let mut found = HashMap::new();
        for key in keys {
            if let Some(d) = self.delivery(flow, key).await? {
                found.insert(key.clone(), d);
            }
        }
        Ok(found)
    }
    /// Record a delivery; `fingerprint` identifies the content sent (e.g. a
    /// hash of the decision), so a changed record is sent again.
    async fn record_delivery(
        &self,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Several deliveries of `flow` (key, fingerprint, target id) in one
    /// transaction: records finishing together share one disk sync.
    async fn record_deliveries(
        &self,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        for (key, fingerprint, target_id) in deliveries {
            self.record_delivery(flow, key, fingerprint, target_id.as_deref())
                .await?;
        }
        Ok(())
    }

    /// Keep an accepted inbox message until it is processed.
    /// The keys of `flow` last recorded with `fingerprint` (e.g. the
    /// referrals refused for lack of consent, looked at again when their
    /// case changes).
    async fn delivery_keys(&self, flow: &str, fingerprint: &str)
        -> Result<Vec<String>, StoreError>;

    /// Consent watch: `case_id` (a Primero case record id) was shared by `flow`.
    async fn case_shared(&self, case_id: &str, flow: &str) -> Result<(), StoreError>;
    /// [`Store::case_shared`] for several cases, in one transaction.
    async fn cases_shared(&self, case_ids: &[String], flow: &str) -> Result<(), StoreError> {
        for id in case_ids {
            self.case_shared(id, flow).await?;
        }
        Ok(())
    }
    /// A case no longer records consent: when it was shared and its loss not
    /// raised yet, mark it and raise one [`Alert`] (returned).
    async fn consent_lost(
        &self,
        case_id: &str,
        flow: &str,
        run_id: &str,
    ) -> Result<Option<Alert>, StoreError>;
    /// Every shared case id, and whether its consent loss was raised.
    async fn shared_cases(&self) -> Result<Vec<(String, bool)>, StoreError>;
    /// A case records consent (again): a later loss raises a new alert.
    async fn consent_present(&self, case_id: &str) -> Result<(), StoreError>;
    /// Undelivered alerts due at `at` (RFC 3339), oldest first.
    async fn alerts_due(&self, at: &str, limit: i64) -> Result<Vec<Alert>, StoreError>;
    /// Every alert, newest first; `pending`: only undelivered ones.
    async fn alerts(&self, pending: bool) -> Result<Vec<Alert>, StoreError>;
    async fn alert_delivered(&self, id: i64) -> Result<(), StoreError>;
    /// A delivery failed (`error`: a status code or error class, no text
    /// from the far side); try again at `next_attempt_at`.
    async fn alert_retry(
        &self,
        id: i64,
        next_attempt_at: &str,
        error: &str,
    ) -> Result<(), StoreError>;

    async fn inbox_put(
        &self,
        id: &str,
        kind: &str,
        api_key_id: &str,
        sealed_body: &[u8],
    ) -> Result<(), StoreError>;
    /// Replace a kept message's sealed body by `new`, only if it is still
    /// `old` (a processor may have taken it meanwhile): true when replaced.
    async fn inbox_reseal(&self, id: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError>;
    /// Every kept message, whatever its state (for re-sealing).
    async fn inbox_all(&self) -> Result<Vec<InboxMessage>, StoreError>;
    /// Messages not yet processed, oldest first.
    async fn inbox_pending(&self) -> Result<Vec<InboxMessage>, StoreError>;
    /// Note a failed processing attempt (reason: codes only).
    /// Its claim is cleared and it is not claimable again before
    /// `retry_after` has passed (the retry backoff, for every replica).
    async fn inbox_failed(
        &self,
        id: &str,
        reason: &str,
        retry_after: Duration,
    ) -> Result<(), StoreError>;
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
    /// Record outcomes of a run under way, in one transaction (a long run
    /// writes them a chunk at a time instead of all at its end).
    async fn record_outcomes_append(&self, records: &[RecordRow]) -> Result<(), StoreError>;
    /// Runs still `running` whose replica died or lost the flow's lease
    /// become `interrupted`: every one except those whose flow's lease is
    /// live with the token the run started under (a live replica's run;
    /// decided by tokens, not by comparing the replicas' clocks with the
    /// database's). Returns how many.
    async fn interrupt_running(&self) -> Result<u64, StoreError>;
    /// Every run of `flow` still `running` becomes `interrupted`: called by
    /// a run that holds the flow's lease (one run of a flow at a time in the
    /// deployment), so any other is dead. Compares no clocks. Returns how many.
    async fn interrupt_flow_runs(&self, flow: &str) -> Result<u64, StoreError>;
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

    /// Take lease `name` for `owner` until now + `ttl` when it is free,
    /// expired, or already `owner`'s. The same owner renews it and keeps its
    /// token; a new owner gets the token + 1. `None` while another owner
    /// holds it unexpired. PostgreSQL decides expiry by its own clock.
    async fn lease_acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Extend a held lease to now + `ttl`; `None` when its token moved on
    /// (lost). An expired lease nobody took is renewed.
    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StoreError>;
    /// Give the lease up (it expires now; the token is kept) if it is still held.
    async fn lease_release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Every lease, expired or not, by name.
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;
    /// [`Store::set_cursor`], committed only while `fence` holds (checked in
    /// the same transaction); else [`StoreError::Fenced`].
    async fn set_cursor_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        value: &str,
    ) -> Result<(), StoreError>;
    /// [`Store::record_delivery`], committed only while `fence` holds.
    async fn record_delivery_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError>;
    /// [`Store::record_deliveries`], committed only while `fence` holds.
    async fn record_deliveries_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        for (key, fingerprint, target_id) in deliveries {
            self.record_delivery_fenced(fence, flow, key, fingerprint, target_id.as_deref())
                .await?;
        }
        Ok(())
    }
    /// Claim up to `limit` pending inbox messages nobody holds a live claim
    /// on and not waiting out a retry backoff, oldest first, for `owner` until now + `ttl`; each claim moves the
    /// message's claim token on. Concurrent claimers never get the same
    /// message (PostgreSQL: `FOR UPDATE SKIP LOCKED`); a crashed claimant's
    /// messages are claimable again once its claim expires.
    /// [`Store::inbox_failed`], [`Store::inbox_set_dead`] and
    /// [`Store::inbox_revive`] clear a claim.
    async fn inbox_claim(
        &self,
        owner: &str,
        ttl: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError>;
    /// Take one of `slots` call slots of partner `scope` for `owner` until
    /// now + `ttl` (a slot whose holder's time ran out is free again);
    /// `None` while all are taken. Slots are numbered `0..slots`.
    async fn slot_acquire(
        &self,
        scope: &str,
        slots: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<u32>, StoreError>;
    async fn slot_release(&self, scope: &str, slot: u32, owner: &str) -> Result<(), StoreError>;
    /// Reserve the next send time of `scope` at one call per `interval`
    /// (GCRA, in one statement) and return how long to wait before sending
    /// (zero: send now).
    async fn rate_reserve(&self, scope: &str, interval: Duration) -> Result<Duration, StoreError>;
    /// Extend a held claim to now + `ttl` while its message is being
    /// processed (a zero `ttl` gives it back: claimable at once); false when
    /// the claim moved on (another replica took it).
    async fn inbox_renew(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError>;

    /// Append audit entries to the chain in one transaction (all or none);
    /// an entry with an unknown code is refused ([`StoreError::Invalid`]).
    /// Appenders in other processes wait and continue the same chain.
    async fn audit_append(&self, entries: &[AuditEntry]) -> Result<(), StoreError>;
    /// Stored entries matching the filter, in chain order unless asked otherwise.
    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Walk the chain: the first changed, removed or reordered entry, if any.
    async fn audit_verify(&self) -> Result<AuditVerification, StoreError>;
    /// Remove the entries older than `before` (RFC 3339) and keep the last
    /// removed one as the anchor, so what remains still verifies; refused
    /// while the chain does not verify. Returns how many were removed.
    async fn audit_prune(&self, before: &str) -> Result<u64, StoreError>;
}

/// Now, as stored: RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    stamp(chrono::Utc::now())
}

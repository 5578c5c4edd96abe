//! The PostgreSQL store (`[state] url = "postgres://…"`): the same schema
//! and the same behaviour as [`SqliteStore`](crate::SqliteStore), for
//! deployments that run several replicas against one database.
//!
//! Differences a reader should know about:
//! - The writer lease excludes nobody: replicas share the database. What
//!   must not run twice at once is serialized in the database itself (the
//!   audit chain's head row lock; the cluster leases).
//! - [`Store::verify`] checks the connection (a round trip, at most once a
//!   second: a lost server fails the call that needed it anyway, and a
//!   server database cannot be "replaced under us" the way a file can).
//! - The URL's password never appears in a message: errors name the
//!   database by [`redact_url`].

mod cluster;
mod consent;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How long a session may sit inside a transaction waiting for its client
/// before the server ends it (releasing its locks): well above any healthy
/// gap between two statements, and near the shortest lease ttl (3 s).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";
use sqlx::Row;

use super::rows::{
    dead_letter_row, inbox_row, record_row, run_row, DEAD_LETTER_COLUMNS, INBOX_COLUMNS,
    RECORD_COLUMNS, RUN_COLUMNS,
};
use super::{
    now, Alert, AuditEntry, AuditFilter, AuditRecord, AuditVerification, ClaimedMessage,
    DeadLetter, Delivery, Fence, Holder, InboxMessage, Lease, OpenMode, RecordRow, RunRow, Store,
    StoreError, WriterLease,
};

/// Connections a store keeps at most: a run's record tasks, the inbox, the
/// console and the scheduler each take one for a statement at a time.
const MAX_CONNECTIONS: u32 = 10;
/// How long a call waits for a free connection (or for the server).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// A successful round trip vouches for the connection this long.
const VERIFY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The URL with its password masked: how messages name the database.
    shown: Arc<str>,
    /// The password as given (also percent-decoded), masked in messages.
    secrets: Arc<[String]>,
    verified: Arc<Verified>,
    slot_rows: Arc<cluster::SlotRows>,
}

/// When the connection last answered.
#[derive(Debug)]
struct Verified {
    origin: Instant,
    /// Milliseconds after `origin` of the last good round trip, plus one
    /// (0: never).
    at_ms: AtomicU64,
}

impl Verified {
    fn fresh(&self) -> bool {
        let at = self.at_ms.load(Ordering::Relaxed);
        at != 0
            && self.origin.elapsed().as_millis() as u64 + 1
                < at.saturating_add(VERIFY_EVERY.as_millis() as u64)
    }

    fn mark(&self) {
        self.at_ms.store(
            self.origin.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
    }
}

/// `url` with its password (user info or `password=` parameter) replaced
/// by `***`: what messages and logs may show. A text that does not parse as
/// a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Some(mut parsed) = postgres_url(url) else {
        return "(a state.url that is not a postgres:// URL)".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// `url` parsed, when it is a `postgres://` (or `postgresql://`) URL.
fn postgres_url(url: &str) -> Option<url::Url> {
    url::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
}

/// The password forms `url` holds, as they could appear in a message.
fn passwords(url: &str) -> Vec<String> {
    let Some(parsed) = postgres_url(url) else {
        // Not parseable: mask the whole text wherever it shows up.
        return vec![url.to_string()];
    };
    let mut out = Vec::new();
    if let Some(p) = parsed.password() {
        out.push(p.to_string());
        out.push(percent_decoded(p));
    }
    for (k, v) in parsed.query_pairs() {
        if k == "password" {
            out.push(v.into_owned());
        }
    }
    // A one- to three-character password would mask half of every message;
    // such a password is no secret worth the noise.
    out.retain(|p| p.chars().count() >= 4);
    out.sort_by_key(|p| std::cmp::Reverse(p.len()));
    out.dedup();
    out
}

/// `%XX` sequences decoded (a password as the server receives it).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mask(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

impl PostgresStore {
    /// Connect to the database at `url` and run the migrations. `Existing`
    /// refuses a database without the bridge's tables (a new deployment
    /// creates them with `--init`); either mode refuses a schema that holds
    /// another application's tables.
    pub async fn open(url: &str, mode: OpenMode) -> Result<Self, StoreError> {
        Self::open_in(url, None, mode).await
    }

    /// [`open`](Self::open) with the bridge's tables in `schema` of the
    /// database (letters, digits and `_`), created with `Init`: several
    /// deployments (e.g. the demo's three) in one database.
    pub async fn open_schema(url: &str, schema: &str, mode: OpenMode) -> Result<Self, StoreError> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(StoreError::Invalid(format!(
                "schema name `{schema}`: use lower-case letters, digits and _"
            )));
        }
        if mode == OpenMode::Init {
            let admin = Self::connect(url, 1, None).await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&admin.pool)
                .await
                .map_err(|e| admin.error(e))?;
            admin.close().await;
        }
        Self::open_in(url, Some(schema), mode).await
    }

    async fn open_in(url: &str, schema: Option<&str>, mode: OpenMode) -> Result<Self, StoreError> {
        let store = Self::connect(url, MAX_CONNECTIONS, schema).await?;
        store.check_schema(mode).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&store.pool)
            .await
            .map_err(|e| {
                StoreError::Migration(mask(&format!("{}: {e}", store.shown), &store.secrets))
            })?;
        store.verified.mark();
        Ok(store)
    }

    /// What a dry run works on: [`snapshot_in_memory`](Self::snapshot_in_memory)
    /// of the database at `url`, read on a read-only connection and never
    /// migrated. A database without the bridge's tables gives an empty store.
    pub async fn snapshot_of(url: &str) -> Result<crate::SqliteStore, StoreError> {
        let store = Self::connect_with(url, 1, None, true).await?;
        let copy = match store.check_schema(OpenMode::Existing).await {
            Ok(()) => store.snapshot_in_memory().await,
            Err(StoreError::NoSchema { .. }) => crate::SqliteStore::in_memory().await,
            Err(e) => Err(e),
        };
        store.close().await;
        copy
    }

    /// A pool on the database at `url`, its tables looked for in `schema`
    /// when given.
    async fn connect(url: &str, max: u32, schema: Option<&str>) -> Result<Self, StoreError> {
        Self::connect_with(url, max, schema, false).await
    }

    /// [`connect`](Self::connect); `read_only`: every transaction is
    /// read-only (the server refuses writes).
    async fn connect_with(
        url: &str,
        max: u32,
        schema: Option<&str>,
        read_only: bool,
    ) -> Result<Self, StoreError> {
        let shown: Arc<str> = redact_url(url).into();
        let secrets: Arc<[String]> = passwords(url).into();
        let fail = |e: &dyn std::fmt::Display| {
            StoreError::Database(mask(&format!("{shown}: {e}"), &secrets))
        };
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| fail(&format!("not a usable PostgreSQL URL ({e})")))?
            .application_name("referral-bridge")
            // A replica suspended in the middle of a transaction (a VM
            // paused, a stalled process) would hold its row locks, and with
            // them every other replica's leases, claims and call slots, until
            // it resumed: the server ends such a session instead. The
            // bridge's transactions never wait on anything but the database.
            .options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            )]);
        if read_only {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Full(m) => StoreError::Full(mask(&m, &secrets)),
                StoreError::Database(m) => fail(&m),
                other => other,
            })?;
        Ok(Self {
            pool,
            shown,
            secrets,
            verified: Arc::new(Verified {
                origin: Instant::now(),
                at_ms: AtomicU64::new(0),
            }),
            slot_rows: Arc::default(),
        })
    }

    /// The database as messages name it (password masked).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Close the pool, waiting for its connections to close.
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// A bridge schema, an empty one (created with `Init`), or refused.
    async fn check_schema(&self, mode: OpenMode) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT current_schema()::text,
                    to_regclass('cursors') IS NOT NULL,
                    to_regclass('_sqlx_migrations') IS NOT NULL,
                    (SELECT count(*) FROM pg_catalog.pg_class c
                      WHERE c.relnamespace = to_regnamespace(current_schema())
                        AND c.relkind IN ('r', 'p', 'v', 'm'))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        let schema: Option<String> = row.get(0);
        let (cursors, migrations, tables): (bool, bool, i64) = (row.get(1), row.get(2), row.get(3));
        let database = self.shown.to_string();
        let Some(schema) = schema else {
            return Err(StoreError::ForeignSchema {
                database,
                why: "no schema of the search_path exists to hold the bridge's tables".into(),
            });
        };
        match (cursors && migrations, tables) {
            (true, _) => Ok(()),
            (false, 0) if mode == OpenMode::Init => Ok(()),
            (false, 0) => Err(StoreError::NoSchema { database, schema }),
            (false, _) => Err(StoreError::ForeignSchema {
                database,
                why: format!(
                    "schema `{schema}` holds {tables} table(s), not the bridge's; give the bridge \
                     a database (or a schema, with `options=-csearch_path%3D<schema>`) of its own"
                ),
            }),
        }
    }

    /// A failure of this database, named by its masked URL.
    fn error(&self, e: sqlx::Error) -> StoreError {
        match StoreError::from(e) {
            StoreError::Full(m) => StoreError::Full(mask(&m, &self.secrets)),
            StoreError::Database(m) => {
                StoreError::Database(mask(&format!("{}: {m}", self.shown), &self.secrets))
            }
            other => other,
        }
    }

    async fn inbox_where(&self, filter: &'static str) -> Result<Vec<InboxMessage>, StoreError> {
        let rows = sqlx::query(&format!(
            "{INBOX_COLUMNS} WHERE {filter} ORDER BY received_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(inbox_row).collect())
    }

    /// A private in-memory SQLite store holding what a dry run reads of
    /// this database: cursors, deliveries, attempts, the dead letter, the
    /// shared cases and the run history (without per-record outcomes), read
    /// in one snapshot. A dry run writes there; this database is only read.
    /// Inbox bodies, alerts and the audit trail are not copied: a dry run
    /// neither processes the inbox nor delivers alerts, and its audit
    /// entries start a chain of their own that is thrown away.
    async fn snapshot_in_memory(&self) -> Result<crate::SqliteStore, StoreError> {
        let copy = crate::SqliteStore::in_memory().await?;
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let mut to = copy.pool().begin().await?;
        for (table, columns) in SNAPSHOT_TABLES {
            let rows = sqlx::query(&format!("SELECT {columns} FROM {table}"))
                .fetch_all(&mut *tx)
                .await?;
            let n = columns.split(',').count();
            let marks = vec!["?"; n].join(", ");
            let insert = format!("INSERT INTO {table} ({columns}) VALUES ({marks})");
            for row in &rows {
                let mut q = sqlx::query(&insert);
                for i in 0..n {
                    q = match row.try_get::<Option<i64>, _>(i) {
                        Ok(v) => q.bind(v),
                        Err(_) => q.bind(row.try_get::<Option<String>, _>(i)?),
                    };
                }
                q.execute(&mut *to).await?;
            }
        }
        to.commit().await?;
        tx.rollback().await?;
        Ok(copy)
    }
}

/// What [`PostgresStore::snapshot_in_memory`] copies, column by column.
const SNAPSHOT_TABLES: [(&str, &str); 6] = [
    ("cursors", "flow, value, updated_at"),
    (
        "deliveries",
        "flow, record_key, fingerprint, target_id, delivered_at",
    ),
    (
        "attempts",
        "flow, source_id, attempts, last_code, updated_at",
    ),
    (
        "dead_letter",
        "id, flow, source_id, reason_code, reason, attempts, cursor_hint, created_at, replayed_at",
    ),
    (
        "shared_cases",
        "case_id, first_flow, first_shared_at, revoked_at",
    ),
    (
        "runs",
        "id, flow, trigger_kind, started_at, ended_at, fetched, delivered, held, skipped, failed, \
         dead_lettered, outcome, aborted_reason, job_hash, mappings_hash",
    ),
];

#[async_trait]
impl Store for PostgresStore {
    async fn acquire_writer(&self, holder: &Holder) -> Result<WriterLease, StoreError> {
        // Replicas share the database: nobody is excluded. The row names
        // the last process that started, for an operator looking around.
        sqlx::query(
            "INSERT INTO writer (id, pid, host, command, since) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host,
               command = excluded.command, since = excluded.since",
        )
        .bind(i64::from(holder.pid))
        .bind(&holder.host)
        .bind(&holder.command)
        .bind(&holder.since)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(WriterLease::new(holder.clone(), None))
    }

    async fn verify(&self) -> Result<(), StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Database(format!(
                "{}: the connection pool was closed",
                self.shown
            )));
        }
        if self.verified.fresh() {
            return Ok(());
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        self.verified.mark();
        Ok(())
    }

    async fn cursor(&self, flow: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM cursors WHERE flow = $1")
                .bind(flow)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_cursor(&self, flow: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (flow, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (flow) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(flow)
        .bind(value)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delivery(&self, flow: &str, key: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "SELECT fingerprint, target_id, delivered_at FROM deliveries WHERE flow = $1 AND record_key = $2",
        )
        .bind(flow)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Delivery {
            fingerprint: r.get(0),
            target_id: r.get(1),
            delivered_at: r.get(2),
        }))
    }

    async fn deliveries(
        &self,
        flow: &str,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT record_key, fingerprint, target_id, delivered_at FROM deliveries
             WHERE flow = $1 AND record_key = ANY($2)",
        )
        .bind(flow)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let delivery = Delivery {
                    fingerprint: r.get(1),
                    target_id: r.get(2),
                    delivered_at: r.get(3),
                };
                (r.get(0), delivery)
            })
            .collect())
    }

    async fn record_delivery(
        &self,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deliveries (flow, record_key, fingerprint, target_id, delivered_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow, record_key) DO UPDATE SET fingerprint = excluded.fingerprint,
               target_id = excluded.target_id, delivered_at = excluded.delivered_at",
        )
        .bind(flow)
        .bind(key)
        .bind(fingerprint)
        .bind(target_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_deliveries(
        &self,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut tx = self.pool.begin().await?;
        execute_inserts(&mut tx, crate::inserts::deliveries(flow, deliveries, &at)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_keys(
        &self,
        flow: &str,
        fingerprint: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT record_key FROM deliveries WHERE flow = $1 AND fingerprint = $2",
        )
        .bind(flow)
        .bind(fingerprint)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn case_shared(&self, case_id: &str, flow: &str) -> Result<(), StoreError> {
        consent::case_shared(&self.pool, case_id, flow).await
    }

    async fn cases_shared(&self, case_ids: &[String], flow: &str) -> Result<(), StoreError> {
        if case_ids.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut tx = self.pool.begin().await?;
        execute_inserts(&mut tx, crate::inserts::shared_cases(case_ids, flow, &at)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consent_lost(
        &self,
        case_id: &str,
        flow: &str,
        run_id: &str,
    ) -> Result<Option<Alert>, StoreError> {
        consent::consent_lost(&self.pool, case_id, flow, run_id).await
    }

    async fn shared_cases(&self) -> Result<Vec<(String, bool)>, StoreError> {
        consent::shared_cases(&self.pool).await
    }

    async fn consent_present(&self, case_id: &str) -> Result<(), StoreError> {
        consent::consent_present(&self.pool, case_id).await
    }

    async fn alerts_due(&self, at: &str, limit: i64) -> Result<Vec<Alert>, StoreError> {
        consent::alerts_due(&self.pool, at, limit).await
    }

    async fn alerts(&self, pending: bool) -> Result<Vec<Alert>, StoreError> {
        consent::alerts(&self.pool, pending).await
    }

    async fn alert_delivered(&self, id: i64) -> Result<(), StoreError> {
        consent::alert_delivered(&self.pool, id).await
    }

    async fn alert_retry(
        &self,
        id: i64,
        next_attempt_at: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        consent::alert_retry(&self.pool, id, next_attempt_at, error).await
    }

    async fn inbox_put(
        &self,
        id: &str,
        kind: &str,
        api_key_id: &str,
        sealed_body: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO inbox (id, kind, sealed_body, received_at, api_key_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(kind)
        .bind(sealed_body)
        .bind(now())
        .bind(api_key_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn inbox_reseal(&self, id: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE inbox SET sealed_body = $1 WHERE id = $2 AND sealed_body = $3")
                .bind(new)
                .bind(id)
                .bind(old)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn inbox_all(&self) -> Result<Vec<InboxMessage>, StoreError> {
        self.inbox_where("TRUE").await
    }

    async fn inbox_pending(&self) -> Result<Vec<InboxMessage>, StoreError> {
        self.inbox_where("state = 'pending'").await
    }

    async fn inbox_failed(
        &self,
        id: &str,
        reason: &str,
        retry_after: Duration,
    ) -> Result<(), StoreError> {
        cluster::inbox_failed(&self.pool, id, reason, retry_after).await
    }

    async fn inbox_delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM inbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inbox_set_dead(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbox SET state = 'dead', last_error = $1, claimed_by = NULL,
               claim_expires_at = NULL WHERE id = $2",
        )
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn inbox_revive(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox SET state = 'pending', attempts = 0, last_error = NULL, claimed_by = NULL,
               claim_expires_at = NULL WHERE id = $1 AND state = 'dead'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn inbox_states(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, state FROM inbox ORDER BY received_at, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn run_started(&self, run: &RunRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (id, flow, trigger_kind, started_at, outcome, lease_token)
             VALUES ($1, $2, $3, $4, 'running', $5)",
        )
        .bind(&run.id)
        .bind(&run.flow)
        .bind(&run.trigger)
        .bind(&run.started_at)
        .bind(run.lease_token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn run_finished(&self, run: &RunRow, records: &[RecordRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE runs SET ended_at = $1, fetched = $2, delivered = $3, held = $4, skipped = $5,
               failed = $6, dead_lettered = $7, outcome = $8, aborted_reason = $9, job_hash = $10,
               mappings_hash = $11
             WHERE id = $12",
        )
        .bind(&run.ended_at)
        .bind(run.fetched)
        .bind(run.delivered)
        .bind(run.held)
        .bind(run.skipped)
        .bind(run.failed)
        .bind(run.dead_lettered)
        .bind(&run.outcome)
        .bind(&run.aborted_reason)
        .bind(&run.job_hash)
        .bind(&run.mappings_hash)
        .bind(&run.id)
        .execute(&mut *tx)
        .await?;
        insert_outcomes(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_outcomes_append(&self, records: &[RecordRow]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_outcomes(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn interrupt_running(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = 'interrupted', ended_at = COALESCE(ended_at, $1)
             WHERE outcome = 'running' AND NOT EXISTS (
               SELECT 1 FROM leases l WHERE l.name = 'flow:' || runs.flow
                 AND l.expires_at > bridge_stamp(now()) AND l.token = runs.lease_token)",
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn interrupt_flow_runs(&self, flow: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = 'interrupted', ended_at = COALESCE(ended_at, $1)
             WHERE outcome = 'running' AND flow = $2",
        )
        .bind(now())
        .bind(flow)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn runs(&self, flow: Option<&str>, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE ($1::text IS NULL OR flow = $1) ORDER BY started_at DESC, id DESC LIMIT $2"
        ))
        .bind(flow)
        // SQLite reads a negative limit as none; PostgreSQL refuses it.
        .bind((limit >= 0).then_some(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(&format!("{RUN_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(run_row))
    }

    async fn run_records(&self, run_id: &str) -> Result<Vec<RecordRow>, StoreError> {
        let rows = sqlx::query(&format!("{RECORD_COLUMNS} WHERE run_id = $1 ORDER BY id"))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(record_row).collect())
    }

    async fn last_run_started(&self, flow: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(started_at) FROM runs WHERE flow = $1")
                .bind(flow)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn attempt_failed(
        &self,
        flow: &str,
        source_id: &str,
        code: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO attempts (flow, source_id, attempts, last_code, updated_at)
             VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (flow, source_id) DO UPDATE SET attempts = attempts.attempts + 1,
               last_code = excluded.last_code, updated_at = excluded.updated_at
             RETURNING attempts",
        )
        .bind(flow)
        .bind(source_id)
        .bind(code)
        .bind(now())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn attempts_all(&self, flow: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT source_id, attempts FROM attempts WHERE flow = $1")
            .bind(flow)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn attempts(&self, flow: &str, source_id: &str) -> Result<i64, StoreError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT attempts FROM attempts WHERE flow = $1 AND source_id = $2")
                .bind(flow)
                .bind(source_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.unwrap_or(0))
    }

    async fn clear_attempts(&self, flow: &str, source_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM attempts WHERE flow = $1 AND source_id = $2")
            .bind(flow)
            .bind(source_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn dead_letter_put(
        &self,
        flow: &str,
        source_id: &str,
        reason_code: &str,
        reason: &str,
        attempts: i64,
        cursor_hint: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dead_letter (flow, source_id, reason_code, reason, attempts, cursor_hint, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (flow, source_id) WHERE replayed_at IS NULL DO NOTHING",
        )
        .bind(flow)
        .bind(source_id)
        .bind(reason_code)
        .bind(reason)
        .bind(attempts)
        .bind(cursor_hint)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn dead_letter_find(
        &self,
        flow: &str,
        source_id: &str,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!(
            "{DEAD_LETTER_COLUMNS} WHERE flow = $1 AND source_id = $2 AND replayed_at IS NULL"
        ))
        .bind(flow)
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(dead_letter_row))
    }

    async fn dead_letter_get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!("{DEAD_LETTER_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(dead_letter_row))
    }

    async fn dead_letters(&self, flow: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!(
            "{DEAD_LETTER_COLUMNS} WHERE replayed_at IS NULL AND ($1::text IS NULL OR flow = $1) ORDER BY id"
        ))
        .bind(flow)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(dead_letter_row).collect())
    }

    async fn dead_letter_release(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE dead_letter SET replayed_at = $1 WHERE id = $2 AND replayed_at IS NULL
             RETURNING flow, source_id",
        )
        .bind(now())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (flow, source_id): (String, String) = (row.get(0), row.get(1));
        sqlx::query("DELETE FROM attempts WHERE flow = $1 AND source_id = $2")
            .bind(&flow)
            .bind(&source_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn lease_acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        cluster::lease_acquire(&self.pool, name, owner, ttl).await
    }

    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        cluster::lease_renew(&self.pool, lease, ttl).await
    }

    async fn lease_release(&self, lease: &Lease) -> Result<(), StoreError> {
        cluster::lease_release(&self.pool, lease).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        cluster::leases(&self.pool).await
    }

    async fn set_cursor_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        cluster::set_cursor_fenced(&self.pool, fence, flow, value).await
    }

    async fn record_delivery_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError> {
        cluster::record_delivery_fenced(&self.pool, fence, flow, key, fingerprint, target_id).await
    }

    async fn record_deliveries_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        cluster::record_deliveries_fenced(&self.pool, fence, flow, deliveries).await
    }

    async fn inbox_claim(
        &self,
        owner: &str,
        ttl: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        cluster::inbox_claim(&self.pool, owner, ttl, limit).await
    }

    async fn slot_acquire(
        &self,
        scope: &str,
        slots: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<u32>, StoreError> {
        cluster::slot_acquire(&self.pool, &self.slot_rows, scope, slots, owner, ttl).await
    }

    async fn slot_release(&self, scope: &str, slot: u32, owner: &str) -> Result<(), StoreError> {
        cluster::slot_release(&self.pool, scope, slot, owner).await
    }

    async fn rate_reserve(&self, scope: &str, interval: Duration) -> Result<Duration, StoreError> {
        cluster::rate_reserve(&self.pool, scope, interval).await
    }

    async fn inbox_renew(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError> {
        cluster::inbox_renew(&self.pool, fence, ttl).await
    }

    async fn audit_append(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        crate::audit::postgres::append(&self.pool, entries).await
    }

    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        crate::audit::postgres::list(&self.pool, filter).await
    }

    async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        crate::audit::postgres::verify(&self.pool).await
    }

    async fn audit_prune(&self, before: &str) -> Result<u64, StoreError> {
        crate::audit::postgres::prune(&self.pool, before).await
    }
}

/// Record outcomes in a few statements: one round trip per [`crate::inserts::ROWS`].
async fn insert_outcomes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    records: &[RecordRow],
) -> Result<(), StoreError> {
    Ok(execute_inserts(tx, crate::inserts::record_outcomes(records)).await?)
}

/// Run the multi-row statements of [`crate::inserts`] in order, none kept
/// prepared (see that module).
pub(crate) async fn execute_inserts(
    conn: &mut sqlx::PgConnection,
    inserts: Vec<sqlx::QueryBuilder<'_, sqlx::Postgres>>,
) -> Result<(), sqlx::Error> {
    for mut insert in inserts {
        insert.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_masked_wherever_the_url_is_shown() {
        let url = "postgres://bridge:s3cr%40t-pw@db.example:5432/bridge?sslmode=require";
        let shown = redact_url(url);
        assert_eq!(
            shown,
            "postgres://bridge:***@db.example:5432/bridge?sslmode=require"
        );
        let secrets = passwords(url);
        assert!(secrets.contains(&"s3cr%40t-pw".to_string()), "{secrets:?}");
        assert!(secrets.contains(&"s3cr@t-pw".to_string()), "{secrets:?}");
        let said = mask("password s3cr@t-pw and s3cr%40t-pw refused", &secrets);
        assert!(!said.contains("s3cr"), "{said}");
        // As a parameter.
        let url = "postgres://db.example/bridge?user=bridge&password=hunter22";
        assert!(!redact_url(url).contains("hunter22"));
        assert_eq!(passwords(url), vec!["hunter22".to_string()]);
        // Not a URL: not shown at all.
        assert!(!redact_url("bridge:hunter22 host=db").contains("hunter22"));
        // No password: shown as is.
        assert_eq!(
            redact_url("postgres://bridge@localhost/bridge"),
            "postgres://bridge@localhost/bridge"
        );
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_named_without_the_password() {
        // A loopback port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://bridge:hunter22-secret@127.0.0.1:{port}/bridge");
        let e = PostgresStore::open(&url, OpenMode::Existing)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!format!("{e:?}").contains("hunter22"));
        let e = PostgresStore::open("postgres://bridge:hunter22-secret@[bad/x", OpenMode::Init)
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("hunter22"), "{e}");
    }
}

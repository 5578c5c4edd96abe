//! The embedded SQLite store.
//!
//! A database is created only when asked (`--init`); an existing file must
//! be a bridge database (its `application_id`, or for databases from before
//! the id, the bridge's tables). The open file is remembered by device and
//! inode so a database deleted or replaced under a running process is
//! noticed ([`Store::verify`]). The writer lease is an OS lock on the
//! sidecar `<db>.lock`, released by the OS when the holder dies.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection as _, Row};

use super::rows::{
    dead_letter_row, inbox_row, record_row, run_row, DEAD_LETTER_COLUMNS, INBOX_COLUMNS,
    RECORD_COLUMNS, RUN_COLUMNS,
};
use super::sqlite_cluster as cluster;
use super::{
    consent, now, Alert, AuditEntry, AuditFilter, AuditRecord, AuditVerification, ClaimedMessage,
    DeadLetter, Delivery, Fence, Holder, InboxMessage, Lease, OpenMode, RecordRow, RunRow, Store,
    StoreError, WriterLease,
};

/// `PRAGMA application_id` of a bridge database ("BRDG").
pub const APPLICATION_ID: u32 = 0x4252_4447;
/// Tables that mark a bridge database created before the application id.
const LEGACY_MARKERS: [&str; 2] = ["_sqlx_migrations", "cursors"];
/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `None` for an in-memory database.
    file: Option<Arc<OpenFile>>,
    /// A scratch copy's folder, deleted with the last clone of the store.
    scratch: Option<std::sync::Arc<ScratchDir>>,
}

/// A private folder removed, with what it holds, when dropped.
#[derive(Debug)]
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("bridge-dry-run-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The database file as opened: its path, and the file itself kept open so
/// its identity can be compared with whatever is at the path later.
#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    /// Device and inode of the file opened. Kept as numbers, not as an open
    /// descriptor: closing any descriptor of the file drops all of this
    /// process's POSIX locks on it, SQLite's included (a store dropped during
    /// a reload would unlock the next one's connection).
    identity: (u64, u64),
    /// The file had content once: a later size of 0 means it was truncated.
    had_content: AtomicBool,
}

impl OpenFile {
    fn check(&self) -> Result<(), StoreError> {
        let replaced = |why| StoreError::Replaced {
            path: self.path.clone(),
            why,
        };
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(replaced("was deleted"))
            }
            Err(e) => {
                return Err(StoreError::Database(format!(
                    "{}: {e}",
                    self.path.display()
                )))
            }
        };
        if (now.dev(), now.ino()) != self.identity {
            return Err(replaced("was replaced by another file"));
        }
        if now.len() > 0 {
            self.had_content.store(true, Ordering::Relaxed);
        } else if self.had_content.load(Ordering::Relaxed) {
            return Err(replaced("was truncated to 0 bytes"));
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Open the bridge database at `path` and run migrations. `Init`
    /// creates it when missing; an empty or foreign file is refused either way.
    pub async fn open(path: &Path, mode: OpenMode) -> Result<Self, StoreError> {
        let io = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
        let existed = match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                    why: "not a regular file".into(),
                })
            }
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(e)),
        };
        if existed {
            check_header(path)?;
        } else {
            if mode == OpenMode::Existing {
                return Err(StoreError::Missing(path.to_path_buf()));
            }
            if let Some(parent) = path.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::Database(format!("{}: {e}", parent.display())))?;
                }
            }
            // Readable by the service's user only; SQLite gives the -wal and
            // -shm files the database file's permissions.
            create_private(path).map_err(io)?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(!existed)
            .busy_timeout(std::time::Duration::from_secs(10));
        // Identify the file on a plain connection before anything (such as
        // switching to WAL) writes to it.
        {
            let mut conn = SqliteConnection::connect_with(&base).await?;
            check_contents(&mut conn, path, existed).await?;
            conn.close().await?;
        }
        let options = base
            .journal_mode(SqliteJournalMode::Wal)
            // A committed cursor must survive a crash or power loss.
            .synchronous(SqliteSynchronous::Full);
        let mut store = Self::with_options(options).await?;
        store.file = Some(Arc::new(OpenFile {
            path: path.to_path_buf(),
            identity: std::fs::metadata(path)
                .map(|m| (m.dev(), m.ino()))
                .map_err(io)?,
            had_content: AtomicBool::new(false),
        }));
        store.verify().await?;
        Ok(store)
    }

    /// A private, writable copy of the database at `path`, deleted when the
    /// store is dropped: what a dry run writes goes there. The original is
    /// only read (a read-only connection, copied with `VACUUM INTO`, a
    /// consistent snapshot even while the service writes), never migrated
    /// or changed. Without a file at `path`: an empty in-memory store.
    pub async fn scratch_copy_of(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Self::in_memory().await;
        }
        let db = |e: std::io::Error| StoreError::Database(format!("scratch copy: {e}"));
        let dir = ScratchDir::create().map_err(db)?;
        let copy = dir.0.join("state.db");
        let source = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut conn = sqlx::ConnectOptions::connect(&source).await?;
        sqlx::query("VACUUM INTO ?")
            .bind(copy.display().to_string())
            .execute(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await?;
        let mut store = Self::open(&copy, OpenMode::Existing).await?;
        store.scratch = Some(std::sync::Arc::new(dir));
        Ok(store)
    }

    /// A consistent copy of the database at `source` written to `dest`
    /// (readable by this user only), taken with `VACUUM INTO` on a
    /// read-only connection: safe while the service writes, and the copy
    /// is a complete database (no -wal file to carry along). `dest` must
    /// not exist. The copy is then opened and checked (`integrity_check`,
    /// the bridge's own application id); returns its size in bytes.
    pub async fn backup(source: &Path, dest: &Path) -> Result<u64, StoreError> {
        let io =
            |p: &Path, e: std::io::Error| StoreError::Database(format!("{}: {e}", p.display()));
        match std::fs::metadata(source) {
            Ok(_) => check_header(source)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(source.to_path_buf()))
            }
            Err(e) => return Err(io(source, e)),
        }
        create_private(dest).map_err(|e| io(dest, e))?;
        let copied = async {
            let options = SqliteConnectOptions::new()
                .filename(source)
                .read_only(true)
                .busy_timeout(std::time::Duration::from_secs(30));
            let mut conn = SqliteConnection::connect_with(&options).await?;
            check_contents(&mut conn, source, true).await?;
            sqlx::query("VACUUM INTO ?")
                .bind(dest.display().to_string())
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            let mut copy = SqliteConnection::connect_with(
                &SqliteConnectOptions::new().filename(dest).read_only(true),
            )
            .await?;
            check_contents(&mut copy, dest, true).await?;
            let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut copy)
                .await?;
            copy.close().await?;
            if verdict != "ok" {
                return Err(StoreError::Database(format!(
                    "{}: the copy fails SQLite's integrity check: {verdict}",
                    dest.display()
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            // No half-written backup left to be mistaken for a good one.
            let _ = std::fs::remove_file(dest);
            return Err(e);
        }
        Ok(std::fs::metadata(dest).map_err(|e| io(dest, e))?.len())
    }

    async fn inbox_where(&self, filter: &'static str) -> Result<Vec<InboxMessage>, StoreError> {
        let rows = sqlx::query(&format!(
            "{INBOX_COLUMNS} WHERE {filter} ORDER BY received_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(inbox_row).collect())
    }

    /// Close the database, waiting for its connection to close (dropping
    /// the store closes it in the background).
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// A private in-memory database (tests, dry runs).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        Self::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            // One writer: SQLite serialises writes anyway, and an in-memory
            // database exists per connection.
            .max_connections(1)
            // Never recycle the connection: an in-memory database lives
            // and dies with it (the pool's default would drop it after
            // ten idle minutes, and the state with it).
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self {
            pool,
            file: None,
            scratch: None,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The recorded writer, if any.
    async fn writer(&self) -> Result<Option<Holder>, StoreError> {
        let row = sqlx::query("SELECT pid, host, command, since FROM writer WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Holder {
            pid: r.get::<i64, _>(0).try_into().unwrap_or_default(),
            host: r.get(1),
            command: r.get(2),
            since: r.get(3),
        }))
    }
}

/// Below this many free bytes the disk counts as full (SQLite needs room
/// for a page, its journal and the WAL).
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Why the database at `path` cannot grow, if it cannot: the file system
/// has (nearly) no space left for this user, or the database or its WAL
/// reached the process's file size limit (`ulimit -f`).
fn space_problem(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_dir` is a valid NUL-terminated path and `stat` a plain
    // struct statvfs fills.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_dir.as_ptr(), &mut stat) } == 0 {
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < MIN_FREE_BYTES {
            return Some(format!(
                "{free} bytes free on the file system of {}",
                dir.display()
            ));
        }
    }
    if let Some(limit) = crate::limits::file_size() {
        let mut wal = path.as_os_str().to_os_string();
        wal.push("-wal");
        for file in [path.as_os_str(), wal.as_os_str()] {
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            // Within a page of the limit: the next write does not fit.
            if size.saturating_add(8 * 1024) >= limit {
                return Some(format!(
                    "{} reached the process's file size limit of {} bytes (ulimit -f)",
                    Path::new(file).display(),
                    limit
                ));
            }
        }
    }
    None
}

/// `<db>.lock` beside the database.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

/// What the file's first bytes say, before SQLite touches it.
/// A new empty file at `path` with mode 0600; an existing file is an error.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

fn check_header(path: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
    let mut header = Vec::with_capacity(100);
    File::open(path)
        .map_err(io)?
        .take(100)
        .read_to_end(&mut header)
        .map_err(io)?;
    if header.is_empty() {
        // Pages written since the last checkpoint live in `<db>-wal`: a
        // database killed before its first checkpoint may have an empty
        // main file and still be whole.
        let mut wal = path.as_os_str().to_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Ok(());
        }
        return Err(StoreError::Empty(path.to_path_buf()));
    }
    let foreign = |why: String| StoreError::Foreign {
        path: path.to_path_buf(),
        why,
    };
    if header.len() < 100 || !header.starts_with(SQLITE_MAGIC) {
        return Err(foreign("not a SQLite database".into()));
    }
    let id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    if id != 0 && id != APPLICATION_ID {
        return Err(foreign(format!(
            "a SQLite database of another application: application_id {id:#x}"
        )));
    }
    Ok(())
}

/// The application id and tables: a bridge database, a new one, or not ours.
async fn check_contents(
    conn: &mut SqliteConnection,
    path: &Path,
    existed: bool,
) -> Result<(), StoreError> {
    let id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await?;
    if id == i64::from(APPLICATION_ID) {
        return Ok(());
    }
    let foreign = |why: String| StoreError::Foreign {
        path: path.to_path_buf(),
        why,
    };
    if id != 0 {
        return Err(foreign(format!(
            "a SQLite database of another application: application_id {id:#x}"
        )));
    }
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut *conn)
            .await?;
    let ours = if tables.is_empty() {
        // A file we just created is new; an existing one without tables
        // is an empty database, not this deployment's state.
        if existed {
            return Err(StoreError::Empty(path.to_path_buf()));
        }
        true
    } else {
        LEGACY_MARKERS.iter().all(|m| tables.iter().any(|t| t == m))
    };
    if !ours {
        return Err(foreign(
            "a SQLite database without the bridge's tables".into(),
        ));
    }
    sqlx::query(&format!("PRAGMA application_id = {APPLICATION_ID}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn acquire_writer(&self, holder: &Holder) -> Result<WriterLease, StoreError> {
        let Some(file) = &self.file else {
            // A private in-memory database has no other writer.
            return Ok(WriterLease::new(holder.clone(), None));
        };
        let path = lock_path(&file.path);
        let io = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    database: file.path.display().to_string(),
                    holder: self.writer().await.ok().flatten(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        sqlx::query(
            "INSERT INTO writer (id, pid, host, command, since) VALUES (1, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, host = excluded.host,
               command = excluded.command, since = excluded.since",
        )
        .bind(i64::from(holder.pid))
        .bind(&holder.host)
        .bind(&holder.command)
        .bind(&holder.since)
        .execute(&self.pool)
        .await?;
        // The only writer now: whoever held a lease, a claim or a partner
        // slot before is a process that ended. Free them at once (tokens are
        // kept, so fencing still tells the holders apart).
        cluster::free_all(&self.pool).await?;
        Ok(WriterLease::new(holder.clone(), Some(Box::new(lock))))
    }

    fn space_problem(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        space_problem(&file.path)
    }

    async fn verify(&self) -> Result<(), StoreError> {
        match &self.file {
            Some(file) => file.check(),
            None => Ok(()),
        }
    }

    async fn cursor(&self, flow: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM cursors WHERE flow = ?")
            .bind(flow)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    async fn set_cursor(&self, flow: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (flow, value, updated_at) VALUES (?, ?, ?)
             ON CONFLICT(flow) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
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
            "SELECT fingerprint, target_id, delivered_at FROM deliveries WHERE flow = ? AND record_key = ?",
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
        let mut found = std::collections::HashMap::new();
        for chunk in keys.chunks(crate::inserts::ROWS) {
            let mut select = sqlx::QueryBuilder::new(
                "SELECT record_key, fingerprint, target_id, delivered_at FROM deliveries WHERE flow = ",
            );
            select.push_bind(flow).push(" AND record_key IN (");
            let mut keys = select.separated(", ");
            for key in chunk {
                keys.push_bind(key);
            }
            select.push(")");
            for r in select
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await?
            {
                found.insert(
                    r.get(0),
                    Delivery {
                        fingerprint: r.get(1),
                        target_id: r.get(2),
                        delivered_at: r.get(3),
                    },
                );
            }
        }
        Ok(found)
    }

    async fn record_delivery(
        &self,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        upsert_delivery(&mut conn, flow, (key, fingerprint, target_id), &now()).await
    }

    async fn record_deliveries(
        &self,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        upsert_deliveries(&mut tx, flow, deliveries, &now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_keys(
        &self,
        flow: &str,
        fingerprint: &str,
    ) -> Result<Vec<String>, StoreError> {
        consent::delivery_keys(&self.pool, flow, fingerprint).await
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
            "INSERT INTO inbox (id, kind, sealed_body, received_at, api_key_id) VALUES (?, ?, ?, ?, ?)",
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
        let done = sqlx::query("UPDATE inbox SET sealed_body = ? WHERE id = ? AND sealed_body = ?")
            .bind(new)
            .bind(id)
            .bind(old)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn inbox_all(&self) -> Result<Vec<InboxMessage>, StoreError> {
        self.inbox_where("1 = 1").await
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
        sqlx::query("DELETE FROM inbox WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inbox_set_dead(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbox SET state = 'dead', last_error = ?, claimed_by = NULL,
               claim_expires_at = NULL WHERE id = ?",
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
               claim_expires_at = NULL WHERE id = ? AND state = 'dead'",
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
             VALUES (?, ?, ?, ?, 'running', ?)",
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
            "UPDATE runs SET ended_at = ?, fetched = ?, delivered = ?, held = ?, skipped = ?, failed = ?,
               dead_lettered = ?, outcome = ?, aborted_reason = ?, job_hash = ?, mappings_hash = ?
             WHERE id = ?",
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
        insert_record_outcomes(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_outcomes_append(&self, records: &[RecordRow]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_record_outcomes(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn interrupt_running(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = 'interrupted', ended_at = COALESCE(ended_at, ?1)
             WHERE outcome = 'running' AND NOT EXISTS (
               SELECT 1 FROM leases l WHERE l.name = 'flow:' || runs.flow
                 AND l.expires_at > ?1 AND l.token = runs.lease_token)",
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn interrupt_flow_runs(&self, flow: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = 'interrupted', ended_at = COALESCE(ended_at, ?1)
             WHERE outcome = 'running' AND flow = ?2",
        )
        .bind(now())
        .bind(flow)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn runs(&self, flow: Option<&str>, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE (?1 IS NULL OR flow = ?1) ORDER BY started_at DESC, id DESC LIMIT ?2"
        ))
        .bind(flow)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(&format!("{RUN_COLUMNS} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(run_row))
    }

    async fn run_records(&self, run_id: &str) -> Result<Vec<RecordRow>, StoreError> {
        let rows = sqlx::query(&format!("{RECORD_COLUMNS} WHERE run_id = ? ORDER BY rowid"))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(record_row).collect())
    }

    async fn last_run_started(&self, flow: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT MAX(started_at) FROM runs WHERE flow = ?")
            .bind(flow)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    async fn attempt_failed(
        &self,
        flow: &str,
        source_id: &str,
        code: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO attempts (flow, source_id, attempts, last_code, updated_at) VALUES (?, ?, 1, ?, ?)
             ON CONFLICT(flow, source_id) DO UPDATE SET attempts = attempts + 1,
               last_code = excluded.last_code, updated_at = excluded.updated_at
             RETURNING attempts",
        )
        .bind(flow)
        .bind(source_id)
        .bind(code)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get(0))
    }

    async fn attempts_all(&self, flow: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT source_id, attempts FROM attempts WHERE flow = ?")
            .bind(flow)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn attempts(&self, flow: &str, source_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT attempts FROM attempts WHERE flow = ? AND source_id = ?")
            .bind(flow)
            .bind(source_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn clear_attempts(&self, flow: &str, source_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM attempts WHERE flow = ? AND source_id = ?")
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
             VALUES (?, ?, ?, ?, ?, ?, ?)
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
            "{DEAD_LETTER_COLUMNS} WHERE flow = ? AND source_id = ? AND replayed_at IS NULL"
        ))
        .bind(flow)
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(dead_letter_row))
    }

    async fn dead_letter_get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!("{DEAD_LETTER_COLUMNS} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(dead_letter_row))
    }

    async fn dead_letters(&self, flow: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!(
            "{DEAD_LETTER_COLUMNS} WHERE replayed_at IS NULL AND (?1 IS NULL OR flow = ?1) ORDER BY id"
        ))
        .bind(flow)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(dead_letter_row).collect())
    }

    async fn dead_letter_release(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE dead_letter SET replayed_at = ? WHERE id = ? AND replayed_at IS NULL RETURNING flow, source_id",
        )
        .bind(now())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (flow, source_id): (String, String) = (row.get(0), row.get(1));
        sqlx::query("DELETE FROM attempts WHERE flow = ? AND source_id = ?")
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
        cluster::slot_acquire(&self.pool, scope, slots, owner, ttl).await
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
        crate::audit::sqlite::append(&self.pool, entries).await
    }

    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        crate::audit::sqlite::list(&self.pool, filter).await
    }

    async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        crate::audit::sqlite::verify(&self.pool).await
    }

    async fn audit_prune(&self, before: &str) -> Result<u64, StoreError> {
        crate::audit::sqlite::prune(&self.pool, before).await
    }
}

async fn insert_record_outcomes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    records: &[RecordRow],
) -> Result<(), StoreError> {
    Ok(execute_inserts(tx, crate::inserts::record_outcomes(records)).await?)
}

/// [`upsert_delivery`] for several, a few statements in all; a key given
/// twice keeps its last row.
pub(crate) async fn upsert_deliveries(
    conn: &mut SqliteConnection,
    flow: &str,
    deliveries: &[(String, String, Option<String>)],
    at: &str,
) -> Result<(), StoreError> {
    Ok(execute_inserts(conn, crate::inserts::deliveries(flow, deliveries, at)).await?)
}

/// Insert or replace the delivery record of `(key, fingerprint, target_id)`.
pub(crate) async fn upsert_delivery(
    conn: &mut SqliteConnection,
    flow: &str,
    (key, fingerprint, target_id): (&str, &str, Option<&str>),
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deliveries (flow, record_key, fingerprint, target_id, delivered_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(flow, record_key) DO UPDATE SET fingerprint = excluded.fingerprint,
           target_id = excluded.target_id, delivered_at = excluded.delivered_at",
    )
    .bind(flow)
    .bind(key)
    .bind(fingerprint)
    .bind(target_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Run the multi-row statements of [`crate::inserts`] in order, none kept
/// prepared (see that module).
pub(crate) async fn execute_inserts(
    conn: &mut SqliteConnection,
    inserts: Vec<sqlx::QueryBuilder<'_, sqlx::Sqlite>>,
) -> Result<(), sqlx::Error> {
    for mut insert in inserts {
        insert.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

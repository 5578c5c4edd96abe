//! The backend a contract case runs against: a SQLite file in a temporary
//! folder, or a fresh PostgreSQL database. Each [`Backend::open`] is a new
//! pool on the same database, as another process would have.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;

use bridge_store::{Monitored, OpenMode, PostgresStore, SqliteStore, Store, StoreError};
use bridge_testkit::postgres::TestDatabase;
use sqlx::Connection as _;

pub enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(TestDatabase),
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Backend::Sqlite { _dir: dir, path }
    }

    /// `None` only when `BRIDGE_TEST_POSTGRES=skip` is set and there is no
    /// PostgreSQL (the test then printed that it skipped).
    pub async fn postgres() -> Option<Self> {
        bridge_testkit::postgres::database()
            .await
            .map(Backend::Postgres)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }

    /// A new store (its own pool) on this backend's database.
    pub async fn open(&self, mode: OpenMode) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Backend::Sqlite { path, .. } => Arc::new(SqliteStore::open(path, mode).await?),
            Backend::Postgres(db) => Arc::new(PostgresStore::open(db.url(), mode).await?),
        })
    }

    /// [`open`](Self::open) with `--init`, which must work.
    pub async fn store(&self) -> Arc<dyn Store> {
        self.open(OpenMode::Init).await.unwrap()
    }

    /// What a dry run works on: a private copy of the state (SQLite: a
    /// scratch copy of the file; PostgreSQL: an in-memory snapshot).
    pub async fn scratch(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { path, .. } => {
                Arc::new(SqliteStore::scratch_copy_of(path).await.unwrap())
            }
            Backend::Postgres(db) => Arc::new(PostgresStore::snapshot_of(db.url()).await.unwrap()),
        }
    }

    /// A store wrapped as the service wraps it.
    pub async fn monitored(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { path, .. } => Arc::new(Monitored::new(
                SqliteStore::open(path, OpenMode::Init).await.unwrap(),
            )),
            Backend::Postgres(db) => Arc::new(Monitored::new(
                PostgresStore::open(db.url(), OpenMode::Init).await.unwrap(),
            )),
        }
    }

    /// Raw SQL on a connection of its own, as someone editing the database
    /// by hand would run it; the error's text on failure.
    pub async fn exec(&self, sql: &str) -> Result<u64, String> {
        match self {
            Backend::Sqlite { path, .. } => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
                    .unwrap()
                    .filename(path)
                    .create_if_missing(true)
                    .busy_timeout(std::time::Duration::from_secs(10));
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .map_err(|e| e.to_string())?;
                let done = sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string());
                let _ = conn.close().await;
                done.map(|d| d.rows_affected())
            }
            Backend::Postgres(db) => {
                let mut conn = sqlx::PgConnection::connect(db.url())
                    .await
                    .map_err(|e| e.to_string())?;
                let done = sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string());
                let _ = conn.close().await;
                done.map(|d| d.rows_affected())
            }
        }
    }

    /// The append-only triggers dropped, so a case can tamper.
    pub async fn drop_audit_triggers(&self) {
        let sql = match self {
            Backend::Sqlite { .. } => {
                "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;
                 DROP TRIGGER IF EXISTS audit_head_forward;"
            }
            Backend::Postgres(_) => {
                "DROP TRIGGER IF EXISTS audit_no_update ON audit;
                 DROP TRIGGER IF EXISTS audit_no_delete ON audit;
                 DROP TRIGGER IF EXISTS audit_head_forward ON audit_head;"
            }
        };
        self.exec(sql).await.unwrap();
    }

    /// Tamper: the triggers dropped, then `sql`, which must work.
    pub async fn tamper(&self, sql: &str) {
        self.drop_audit_triggers().await;
        self.exec(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

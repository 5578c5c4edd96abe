//! The embedded SQLite store.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::{now, Delivery, InboxMessage, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and run migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Database(format!("{}: {e}", parent.display())))?;
            }
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A committed cursor must survive a crash or power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        Self::with_options(options).await
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
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
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

    async fn record_delivery(
        &self,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
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
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn inbox_put(&self, id: &str, kind: &str, sealed_body: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO inbox (id, kind, sealed_body, received_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(kind)
            .bind(sealed_body)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inbox_pending(&self) -> Result<Vec<InboxMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, sealed_body, received_at, attempts FROM inbox ORDER BY received_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| InboxMessage {
                id: r.get(0),
                kind: r.get(1),
                sealed_body: r.get(2),
                received_at: r.get(3),
                attempts: r.get(4),
            })
            .collect())
    }

    async fn inbox_failed(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET attempts = attempts + 1, last_error = ? WHERE id = ?")
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inbox_delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM inbox WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursor_delivery_and_inbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).await.unwrap();
            assert_eq!(s.cursor("f").await.unwrap(), None);
            s.set_cursor("f", "2025-01-01T00:00:00.000Z").await.unwrap();
            s.set_cursor("f", "2025-01-02T00:00:00.000Z").await.unwrap();
            s.record_delivery("f", "case/svc", "accepted", Some("t1"))
                .await
                .unwrap();
            s.inbox_put("m1", "PrimeroOutgoingReferral", b"sealed")
                .await
                .unwrap();
            s.inbox_failed("m1", "partner-unavailable").await.unwrap();
        }
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            s.cursor("f").await.unwrap().as_deref(),
            Some("2025-01-02T00:00:00.000Z")
        );
        let d = s.delivery("f", "case/svc").await.unwrap().unwrap();
        assert_eq!(d.fingerprint, "accepted");
        assert_eq!(d.target_id.as_deref(), Some("t1"));
        let pending = s.inbox_pending().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].attempts, 1);
        s.inbox_delete("m1").await.unwrap();
        assert!(s.inbox_pending().await.unwrap().is_empty());
    }
}

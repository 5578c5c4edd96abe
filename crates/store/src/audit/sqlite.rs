//! The audit trail's SQL on SQLite: appends and prunes take SQLite's write
//! lock first (`BEGIN IMMEDIATE`), so appenders in several processes queue
//! and continue one chain.

use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::{
    check_all, head_row, prune_allowed, prune_cutoff, record, time_bound, verify_in, AuditEntry,
    AuditFilter, AuditRecord, AuditVerification, ChainRead, Head, COLUMNS, HEAD_COLUMNS,
};
use crate::StoreError;

#[async_trait::async_trait]
impl ChainRead for SqliteConnection {
    async fn head(&mut self) -> Result<Head, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {HEAD_COLUMNS} FROM audit_head WHERE id = 1"
        ))
        .fetch_optional(&mut *self)
        .await?;
        head_row(row)
    }

    async fn entries_after(
        &mut self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(seq)
        .bind(limit)
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.iter().map(record).collect())
    }

    async fn seq_with_hash(&mut self, hash: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM audit WHERE hash = ? LIMIT 1")
                .bind(hash)
                .fetch_optional(&mut *self)
                .await?,
        )
    }
}

/// Append in one write transaction taken at once (`BEGIN IMMEDIATE`): the
/// head is read and moved under SQLite's write lock, so appenders in other
/// processes wait and continue the chain after these entries.
pub(crate) async fn append(pool: &SqlitePool, entries: &[AuditEntry]) -> Result<(), StoreError> {
    check_all(entries)?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let head = tx.head().await?;
    let (rows, seq, prev) = super::chain(head.seq, head.hash, entries);
    crate::sqlite::execute_inserts(&mut tx, crate::inserts::audit(COLUMNS, &rows)).await?;
    sqlx::query("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn list(
    pool: &SqlitePool,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let from = time_bound("from", &filter.from)?;
    let to = time_bound("to", &filter.to)?;
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit
         WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2)
           AND (?3 IS NULL OR flow = ?3) AND (?4 IS NULL OR case_id = ?4)
           AND (?6 IS NULL OR seq = ?6)
         ORDER BY seq {order} LIMIT ?5"
    ))
    .bind(from)
    .bind(to)
    .bind(&filter.flow)
    .bind(&filter.case_id)
    .bind(filter.limit.map_or(-1, |l| l.max(0)))
    .bind(filter.seq)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(record).collect())
}

pub(crate) async fn verify(pool: &SqlitePool) -> Result<AuditVerification, StoreError> {
    // One read transaction: the head and the entries from one snapshot.
    let mut tx = pool.begin().await?;
    let v = verify_in(&mut *tx).await?;
    tx.rollback().await?;
    Ok(v)
}

/// Remove the entries older than `before` (the longest run of oldest
/// entries all older than it, so what remains is one unbroken chain) and
/// move the anchor to the last one removed. Refused while the chain does
/// not verify: pruning would destroy the evidence.
pub(crate) async fn prune(pool: &SqlitePool, before: &str) -> Result<u64, StoreError> {
    let before = prune_cutoff(before)?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let v = verify_in(&mut *tx).await?;
    prune_allowed(&v)?;
    let first_kept: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit WHERE at >= ?")
        .bind(&before)
        .fetch_one(&mut *tx)
        .await?;
    let cut = first_kept.map_or(v.head_seq, |s| s - 1);
    if cut <= v.anchor.seq {
        return Ok(0);
    }
    let cut_hash: String = sqlx::query_scalar("SELECT hash FROM audit WHERE seq = ?")
        .bind(cut)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("UPDATE audit_head SET pruning = 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    let removed = sqlx::query("DELETE FROM audit WHERE seq <= ?")
        .bind(cut)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE audit_head SET pruning = 0, pruned_seq = ?, pruned_hash = ?, pruned_before = ?,
           pruned_at = ? WHERE id = 1",
    )
    .bind(cut)
    .bind(&cut_hash)
    .bind(&before)
    .bind(crate::now())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(removed)
}

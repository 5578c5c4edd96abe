//! The audit trail's SQL on PostgreSQL. Appends and prunes lock the head
//! row first (`SELECT … FOR UPDATE`, in their own transaction): appenders in
//! several processes (replicas) queue on that lock, and each reads the head
//! its predecessor committed, so they continue one chain.

use sqlx::postgres::{PgConnection, PgPool};

use super::{
    check_all, head_row, prune_allowed, prune_cutoff, record, time_bound, verify_in, AuditEntry,
    AuditFilter, AuditRecord, AuditVerification, ChainRead, Head, COLUMNS, HEAD_COLUMNS,
};
use crate::StoreError;

#[async_trait::async_trait]
impl ChainRead for PgConnection {
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
            "SELECT {COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(seq)
        .bind(limit)
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.iter().map(record).collect())
    }

    async fn seq_with_hash(&mut self, hash: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM audit WHERE hash = $1 LIMIT 1")
                .bind(hash)
                .fetch_optional(&mut *self)
                .await?,
        )
    }
}

/// The head, locked until the transaction ends: other appenders (and
/// prunes) wait here, then read the head this one committed.
async fn lock_head(conn: &mut PgConnection) -> Result<Head, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {HEAD_COLUMNS} FROM audit_head WHERE id = 1 FOR UPDATE"
    ))
    .fetch_optional(&mut *conn)
    .await?;
    head_row(row)
}

pub(crate) async fn append(pool: &PgPool, entries: &[AuditEntry]) -> Result<(), StoreError> {
    check_all(entries)?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let head = lock_head(&mut tx).await?;
    let (rows, seq, prev) = super::chain(head.seq, head.hash, entries);
    // A few statements for the batch (a run's entries), each under
    // PostgreSQL's 65,535 bind parameters.
    crate::postgres::execute_inserts(&mut tx, crate::inserts::audit(COLUMNS, &rows)).await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn list(
    pool: &PgPool,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let from = time_bound("from", &filter.from)?;
    let to = time_bound("to", &filter.to)?;
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit
         WHERE ($1::text IS NULL OR at >= $1) AND ($2::text IS NULL OR at < $2)
           AND ($3::text IS NULL OR flow = $3) AND ($4::text IS NULL OR case_id = $4)
           AND ($6::bigint IS NULL OR seq = $6)
         ORDER BY seq {order} LIMIT $5"
    ))
    .bind(from)
    .bind(to)
    .bind(&filter.flow)
    .bind(&filter.case_id)
    // NULL: no limit.
    .bind(filter.limit.map(|l| l.max(0)))
    .bind(filter.seq)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(record).collect())
}

pub(crate) async fn verify(pool: &PgPool) -> Result<AuditVerification, StoreError> {
    // One snapshot for the head and every entry, however long the walk.
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let v = verify_in(&mut *tx).await?;
    tx.rollback().await?;
    Ok(v)
}

/// As on SQLite (see `audit::sqlite::prune`), with the head row locked for
/// the whole transaction: no append runs between the check and the delete.
pub(crate) async fn prune(pool: &PgPool, before: &str) -> Result<u64, StoreError> {
    let before = prune_cutoff(before)?;
    let mut tx = pool.begin().await?;
    lock_head(&mut tx).await?;
    let v = verify_in(&mut *tx).await?;
    prune_allowed(&v)?;
    let first_kept: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit WHERE at >= $1")
        .bind(&before)
        .fetch_one(&mut *tx)
        .await?;
    let cut = first_kept.map_or(v.head_seq, |s| s - 1);
    if cut <= v.anchor.seq {
        return Ok(0);
    }
    let cut_hash: String = sqlx::query_scalar("SELECT hash FROM audit WHERE seq = $1")
        .bind(cut)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("UPDATE audit_head SET pruning = 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    let removed = sqlx::query("DELETE FROM audit WHERE seq <= $1")
        .bind(cut)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE audit_head SET pruning = 0, pruned_seq = $1, pruned_hash = $2, pruned_before = $3,
           pruned_at = $4 WHERE id = 1",
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

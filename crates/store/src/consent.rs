//! The consent watch's state (issue 16): which cases were shared, and the
//! alerts raised when one of them no longer records consent. Ids only.

use sqlx::{Row, SqlitePool};

use super::rows::{alert_row as alert, ALERT_COLUMNS};
use super::{now, StoreError};

/// Alert kind: a shared case no longer records consent.
pub const CONSENT_REVOKED: &str = "consent-revoked";

/// An alert for an operator's manual procedure. Ids and timestamps only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alert {
    pub id: i64,
    /// e.g. [`CONSENT_REVOKED`].
    pub kind: String,
    pub flow: String,
    pub run_id: String,
    /// The Primero case record id.
    pub case_id: String,
    pub raised_at: String,
    /// Webhook deliveries tried so far.
    pub attempts: i64,
    pub next_attempt_at: String,
    pub delivered_at: Option<String>,
    /// Why the last delivery failed: a status code or error class.
    pub last_error: Option<String>,
}

pub(crate) async fn case_shared(
    pool: &SqlitePool,
    case_id: &str,
    flow: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO shared_cases (case_id, first_flow, first_shared_at) VALUES (?, ?, ?)
         ON CONFLICT(case_id) DO NOTHING",
    )
    .bind(case_id)
    .bind(flow)
    .bind(now())
    .execute(pool)
    .await?;
    Ok(())
}

/// Mark a shared case's consent lost and raise its alert, once: `None` when
/// the case was never shared or its loss was already raised.
pub(crate) async fn consent_lost(
    pool: &SqlitePool,
    case_id: &str,
    flow: &str,
    run_id: &str,
) -> Result<Option<Alert>, StoreError> {
    let at = now();
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE shared_cases SET revoked_at = ? WHERE case_id = ? AND revoked_at IS NULL",
    )
    .bind(&at)
    .bind(case_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let id: i64 = sqlx::query(
        "INSERT INTO alerts (kind, flow, run_id, case_id, raised_at, next_attempt_at)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(CONSENT_REVOKED)
    .bind(flow)
    .bind(run_id)
    .bind(case_id)
    .bind(&at)
    .bind(&at)
    .fetch_one(&mut *tx)
    .await?
    .get(0);
    tx.commit().await?;
    Ok(Some(Alert {
        id,
        kind: CONSENT_REVOKED.into(),
        flow: flow.into(),
        run_id: run_id.into(),
        case_id: case_id.into(),
        raised_at: at.clone(),
        attempts: 0,
        next_attempt_at: at,
        delivered_at: None,
        last_error: None,
    }))
}

pub(crate) async fn consent_present(pool: &SqlitePool, case_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE shared_cases SET revoked_at = NULL WHERE case_id = ? AND revoked_at IS NOT NULL",
    )
    .bind(case_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every shared case, and whether its consent loss was raised.
pub(crate) async fn shared_cases(pool: &SqlitePool) -> Result<Vec<(String, bool)>, StoreError> {
    let rows = sqlx::query("SELECT case_id, revoked_at IS NOT NULL FROM shared_cases")
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) async fn delivery_keys(
    pool: &SqlitePool,
    flow: &str,
    fingerprint: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT record_key FROM deliveries WHERE flow = ? AND fingerprint = ?")
        .bind(flow)
        .bind(fingerprint)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Undelivered alerts whose next attempt is due at `at`, oldest first.
pub(crate) async fn alerts_due(
    pool: &SqlitePool,
    at: &str,
    limit: i64,
) -> Result<Vec<Alert>, StoreError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE delivered_at IS NULL AND next_attempt_at <= ?
         ORDER BY id LIMIT ?"
    );
    let rows = sqlx::query(&sql)
        .bind(at)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(alert).collect())
}

/// Every alert, newest first (`pending`: only those not delivered).
pub(crate) async fn alerts(pool: &SqlitePool, pending: bool) -> Result<Vec<Alert>, StoreError> {
    let filter = if pending {
        "WHERE delivered_at IS NULL"
    } else {
        ""
    };
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts {filter} ORDER BY id DESC");
    let rows = sqlx::query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(alert).collect())
}

pub(crate) async fn alert_delivered(pool: &SqlitePool, id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE alerts SET delivered_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?")
        .bind(now())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn alert_retry(
    pool: &SqlitePool,
    id: i64,
    next_attempt_at: &str,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
    )
    .bind(next_attempt_at)
    .bind(error)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

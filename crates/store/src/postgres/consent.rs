//! The consent watch's state on PostgreSQL (see `crate::consent` for what it
//! means; this is the same SQL with PostgreSQL's parameters).

use sqlx::{PgPool, Row};

use crate::consent::{Alert, CONSENT_REVOKED};
use crate::rows::{alert_row, ALERT_COLUMNS};
use crate::{now, StoreError};

pub(crate) async fn case_shared(
    pool: &PgPool,
    case_id: &str,
    flow: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO shared_cases (case_id, first_flow, first_shared_at) VALUES ($1, $2, $3)
         ON CONFLICT (case_id) DO NOTHING",
    )
    .bind(case_id)
    .bind(flow)
    .bind(now())
    .execute(pool)
    .await?;
    Ok(())
}

/// Mark a shared case's consent lost and raise its alert, once. The
/// conditional UPDATE takes the row's lock: of two replicas seeing the loss
/// at once, one changes the row and raises the alert, the other changes
/// nothing.
pub(crate) async fn consent_lost(
    pool: &PgPool,
    case_id: &str,
    flow: &str,
    run_id: &str,
) -> Result<Option<Alert>, StoreError> {
    let at = now();
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE shared_cases SET revoked_at = $1 WHERE case_id = $2 AND revoked_at IS NULL",
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
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
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

pub(crate) async fn consent_present(pool: &PgPool, case_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE shared_cases SET revoked_at = NULL WHERE case_id = $1 AND revoked_at IS NOT NULL",
    )
    .bind(case_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn shared_cases(pool: &PgPool) -> Result<Vec<(String, bool)>, StoreError> {
    let rows = sqlx::query("SELECT case_id, revoked_at IS NOT NULL FROM shared_cases")
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) async fn alerts_due(
    pool: &PgPool,
    at: &str,
    limit: i64,
) -> Result<Vec<Alert>, StoreError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE delivered_at IS NULL AND next_attempt_at <= $1
         ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(at)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(alert_row).collect())
}

pub(crate) async fn alerts(pool: &PgPool, pending: bool) -> Result<Vec<Alert>, StoreError> {
    let filter = if pending {
        "WHERE delivered_at IS NULL"
    } else {
        ""
    };
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts {filter} ORDER BY id DESC");
    let rows = sqlx::query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(alert_row).collect())
}

pub(crate) async fn alert_delivered(pool: &PgPool, id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE alerts SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2",
    )
    .bind(now())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn alert_retry(
    pool: &PgPool,
    id: i64,
    next_attempt_at: &str,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3",
    )
    .bind(next_attempt_at)
    .bind(error)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

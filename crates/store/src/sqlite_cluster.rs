//! The cluster methods of the SQLite store. One process writes a SQLite
//! database (the writer lock), so these mostly serve the same contract as
//! PostgreSQL's: leases and claims behave the same for one replica.

use std::time::Duration;

use sqlx::{Row as _, SqlitePool};

use super::cluster::{after, stamp, ClaimedMessage, Fence, Lease};
use super::{InboxMessage, StoreError};

fn lease_row(r: &sqlx::sqlite::SqliteRow) -> Lease {
    Lease {
        name: r.get(0),
        owner: r.get(1),
        token: r.get(2),
        acquired_at: r.get(3),
        expires_at: r.get(4),
    }
}

pub(crate) async fn lease_acquire(
    pool: &SqlitePool,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let now = chrono::Utc::now();
    // A new owner bumps the token; the same owner renews and keeps it.
    let row = sqlx::query(
        "INSERT INTO leases (name, owner, token, acquired_at, expires_at) VALUES (?1, ?2, 1, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET
           token = CASE WHEN leases.owner = excluded.owner THEN leases.token ELSE leases.token + 1 END,
           acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at
                              ELSE excluded.acquired_at END,
           owner = excluded.owner,
           expires_at = excluded.expires_at
         WHERE leases.owner = excluded.owner OR leases.expires_at <= ?3
         RETURNING name, owner, token, acquired_at, expires_at",
    )
    .bind(name)
    .bind(owner)
    .bind(stamp(now))
    .bind(after(now, ttl))
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(lease_row))
}

/// Expire every lease and claim and free every partner slot: their holders
/// ended (SQLite has one writing process, which has just started).
pub(crate) async fn free_all(pool: &SqlitePool) -> Result<(), StoreError> {
    let now = stamp(chrono::Utc::now());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE leases SET expires_at = ?1 WHERE expires_at > ?1")
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE inbox SET claimed_by = NULL, claim_expires_at = NULL WHERE claimed_by IS NOT NULL",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE partner_slots SET owner = NULL, expires_at = NULL")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn lease_renew(
    pool: &SqlitePool,
    lease: &Lease,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let row = sqlx::query(
        "UPDATE leases SET expires_at = ?1 WHERE name = ?2 AND owner = ?3 AND token = ?4
         RETURNING name, owner, token, acquired_at, expires_at",
    )
    .bind(after(chrono::Utc::now(), ttl))
    .bind(&lease.name)
    .bind(&lease.owner)
    .bind(lease.token)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(lease_row))
}

pub(crate) async fn lease_release(pool: &SqlitePool, lease: &Lease) -> Result<(), StoreError> {
    sqlx::query("UPDATE leases SET expires_at = ?1 WHERE name = ?2 AND owner = ?3 AND token = ?4")
        .bind(stamp(chrono::Utc::now()))
        .bind(&lease.name)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn leases(pool: &SqlitePool) -> Result<Vec<Lease>, StoreError> {
    let rows =
        sqlx::query("SELECT name, owner, token, acquired_at, expires_at FROM leases ORDER BY name")
            .fetch_all(pool)
            .await?;
    Ok(rows.iter().map(lease_row).collect())
}

/// Whether `fence` still holds, on the transaction's connection.
async fn check(conn: &mut sqlx::SqliteConnection, fence: &Fence) -> Result<(), StoreError> {
    let current: Option<i64> = match fence {
        Fence::Lease { name, .. } => {
            sqlx::query_scalar("SELECT token FROM leases WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?
        }
        Fence::Claim { message_id, .. } => {
            sqlx::query_scalar("SELECT claim_token FROM inbox WHERE id = ?")
                .bind(message_id)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    let token = match fence {
        Fence::Lease { token, .. } | Fence::Claim { token, .. } => *token,
    };
    match current {
        Some(now) if now == token => Ok(()),
        Some(now) => Err(StoreError::Fenced(format!(
            "{fence} no longer holds: the token is now {now} (another replica took over)"
        ))),
        None => Err(StoreError::Fenced(format!(
            "{fence} no longer holds: it is gone"
        ))),
    }
}

pub(crate) async fn set_cursor_fenced(
    pool: &SqlitePool,
    fence: &Fence,
    flow: &str,
    value: &str,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check(&mut tx, fence).await?;
    sqlx::query(
        "INSERT INTO cursors (flow, value, updated_at) VALUES (?, ?, ?)
         ON CONFLICT(flow) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(flow)
    .bind(value)
    .bind(super::now())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn record_delivery_fenced(
    pool: &SqlitePool,
    fence: &Fence,
    flow: &str,
    key: &str,
    fingerprint: &str,
    target_id: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check(&mut tx, fence).await?;
    let delivery = (key, fingerprint, target_id);
    super::sqlite::upsert_delivery(&mut tx, flow, delivery, &super::now()).await?;
    tx.commit().await?;
    Ok(())
}

/// Several delivery records under one fence check, in one transaction.
pub(crate) async fn record_deliveries_fenced(
    pool: &SqlitePool,
    fence: &Fence,
    flow: &str,
    deliveries: &[(String, String, Option<String>)],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let at = super::now();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check(&mut tx, fence).await?;
    super::sqlite::upsert_deliveries(&mut tx, flow, deliveries, &at).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn inbox_claim(
    pool: &SqlitePool,
    owner: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Vec<ClaimedMessage>, StoreError> {
    let now = chrono::Utc::now();
    let rows = sqlx::query(
        "UPDATE inbox SET claimed_by = ?1, claim_expires_at = ?2, claim_token = claim_token + 1
         WHERE id IN (
           SELECT id FROM inbox
           WHERE state = 'pending' AND (claim_expires_at IS NULL OR claim_expires_at <= ?3)
           ORDER BY received_at, id LIMIT ?4)
         RETURNING id, kind, sealed_body, received_at, attempts, api_key_id, claimed_by, claim_token",
    )
    .bind(owner)
    .bind(after(now, ttl))
    .bind(stamp(now))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut claimed: Vec<ClaimedMessage> = rows
        .into_iter()
        .map(|r| ClaimedMessage {
            fence: Fence::Claim {
                message_id: r.get(0),
                token: r.get(7),
            },
            message: InboxMessage {
                id: r.get(0),
                kind: r.get(1),
                sealed_body: r.get(2),
                received_at: r.get(3),
                attempts: r.get(4),
                api_key_id: r.get(5),
                claimed_by: r.get(6),
            },
        })
        .collect();
    // RETURNING gives no order.
    claimed.sort_by(|a, b| {
        (&a.message.received_at, &a.message.id).cmp(&(&b.message.received_at, &b.message.id))
    });
    Ok(claimed)
}

pub(crate) async fn inbox_renew(
    pool: &SqlitePool,
    fence: &Fence,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let Fence::Claim { message_id, token } = fence else {
        return Ok(false);
    };
    let done = sqlx::query(
        "UPDATE inbox SET claim_expires_at = ? WHERE id = ? AND claim_token = ? AND claimed_by IS NOT NULL",
    )
    .bind(after(chrono::Utc::now(), ttl))
    .bind(message_id)
    .bind(token)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A failed attempt: counted, the claim cleared, and not claimable again
/// before `retry_after` (NULL: at once).
pub(crate) async fn inbox_failed(
    pool: &SqlitePool,
    id: &str,
    reason: &str,
    retry_after: Duration,
) -> Result<(), StoreError> {
    let due = (!retry_after.is_zero()).then(|| after(chrono::Utc::now(), retry_after));
    sqlx::query(
        "UPDATE inbox SET attempts = attempts + 1, last_error = ?, claimed_by = NULL,
           claim_expires_at = ? WHERE id = ?",
    )
    .bind(reason)
    .bind(due)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn slot_acquire(
    pool: &SqlitePool,
    scope: &str,
    slots: u32,
    owner: &str,
    ttl: Duration,
) -> Result<Option<u32>, StoreError> {
    let now = chrono::Utc::now();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for slot in 0..slots {
        sqlx::query("INSERT OR IGNORE INTO partner_slots (scope, slot) VALUES (?, ?)")
            .bind(scope)
            .bind(i64::from(slot))
            .execute(&mut *tx)
            .await?;
    }
    let slot: Option<i64> = sqlx::query_scalar(
        "UPDATE partner_slots SET owner = ?1, expires_at = ?2
         WHERE scope = ?3 AND slot = (
           SELECT slot FROM partner_slots
           WHERE scope = ?3 AND slot < ?4 AND (owner IS NULL OR expires_at <= ?5)
           ORDER BY slot LIMIT 1)
         RETURNING slot",
    )
    .bind(owner)
    .bind(after(now, ttl))
    .bind(scope)
    .bind(i64::from(slots))
    .bind(stamp(now))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(slot.and_then(|s| u32::try_from(s).ok()))
}

pub(crate) async fn slot_release(
    pool: &SqlitePool,
    scope: &str,
    slot: u32,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE partner_slots SET owner = NULL, expires_at = NULL
         WHERE scope = ? AND slot = ? AND owner = ?",
    )
    .bind(scope)
    .bind(i64::from(slot))
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn rate_reserve(
    pool: &SqlitePool,
    scope: &str,
    interval: Duration,
) -> Result<Duration, StoreError> {
    let now = chrono::Utc::now().timestamp_micros();
    let step = i64::try_from(interval.as_micros())
        .unwrap_or(i64::MAX)
        .max(1);
    // GCRA: the call may go at max(tat, now); the next one step later.
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO partner_rates (scope, tat_us) VALUES (?1, ?2 + ?3)
         ON CONFLICT(scope) DO UPDATE SET tat_us = MAX(partner_rates.tat_us, ?2) + ?3
         RETURNING tat_us",
    )
    .bind(scope)
    .bind(now)
    .bind(step)
    .fetch_one(pool)
    .await?;
    let send_at = next - step;
    Ok(Duration::from_micros(
        u64::try_from(send_at - now).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{SqliteStore, Store};

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_next_writer_of_a_file_frees_what_a_dead_process_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let first = SqliteStore::open(&path, crate::OpenMode::Init)
            .await
            .unwrap();
        let writer = first
            .acquire_writer(&crate::Holder::current())
            .await
            .unwrap();
        let held = first
            .lease_acquire("flow:x", "a", LONG)
            .await
            .unwrap()
            .unwrap();
        first
            .inbox_put("m1", "k", "key-1", b"sealed")
            .await
            .unwrap();
        assert_eq!(first.inbox_claim("a", LONG, 1).await.unwrap().len(), 1);
        assert_eq!(
            first.slot_acquire("ping", 1, "a", LONG).await.unwrap(),
            Some(0)
        );
        // The process "dies": its OS lock goes with it.
        drop(writer);
        first.close().await;
        let next = SqliteStore::open(&path, crate::OpenMode::Existing)
            .await
            .unwrap();
        let _writer = next
            .acquire_writer(&crate::Holder::current())
            .await
            .unwrap();
        let taken = next
            .lease_acquire("flow:x", "b", LONG)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.token, held.token + 1, "the token still moves on");
        assert_eq!(next.inbox_claim("b", LONG, 1).await.unwrap().len(), 1);
        assert_eq!(
            next.slot_acquire("ping", 1, "b", LONG).await.unwrap(),
            Some(0)
        );
    }
}

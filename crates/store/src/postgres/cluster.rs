//! The cluster methods on PostgreSQL, where replicas really share the
//! database. Each is one statement (or, for a fenced write, one statement
//! whose fence check holds a row lock until the write commits), and every
//! expiry is decided by the database's clock (`now()`, stored through
//! `bridge_stamp`), never by a replica's.

use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use crate::cluster::{ClaimedMessage, Fence, Lease};
use crate::{now, InboxMessage, StoreError};

/// A duration as bound to `$n * interval '1 microsecond'`.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `now() + $n µs` as stored, `$n` being the parameter number given.
fn expiry(param: usize) -> String {
    format!("bridge_stamp(now() + ${param}::bigint * interval '1 microsecond')")
}

const LEASE_COLUMNS: &str = "name, owner, token, acquired_at, expires_at";

fn lease_row(r: &PgRow) -> Lease {
    Lease {
        name: r.get(0),
        owner: r.get(1),
        token: r.get(2),
        acquired_at: r.get(3),
        expires_at: r.get(4),
    }
}

/// One statement: of several replicas asking at once, the row lock the
/// upsert takes lets one in; the others re-read the row it wrote and find
/// it held (`None`).
pub(crate) async fn lease_acquire(
    pool: &PgPool,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO leases (name, owner, token, acquired_at, expires_at)
         VALUES ($1, $2, 1, bridge_stamp(now()), {})
         ON CONFLICT (name) DO UPDATE SET
           token = CASE WHEN leases.owner = excluded.owner THEN leases.token ELSE leases.token + 1 END,
           acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at
                              ELSE excluded.acquired_at END,
           owner = excluded.owner,
           expires_at = excluded.expires_at
         WHERE leases.owner = excluded.owner OR leases.expires_at <= excluded.acquired_at
         RETURNING {LEASE_COLUMNS}",
        expiry(3)
    ))
    .bind(name)
    .bind(owner)
    .bind(micros(ttl))
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(lease_row))
}

pub(crate) async fn lease_renew(
    pool: &PgPool,
    lease: &Lease,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let row = sqlx::query(&format!(
        "UPDATE leases SET expires_at = {} WHERE name = $2 AND owner = $3 AND token = $4
         RETURNING {LEASE_COLUMNS}",
        expiry(1)
    ))
    .bind(micros(ttl))
    .bind(&lease.name)
    .bind(&lease.owner)
    .bind(lease.token)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(lease_row))
}

pub(crate) async fn lease_release(pool: &PgPool, lease: &Lease) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE leases SET expires_at = bridge_stamp(now())
         WHERE name = $1 AND owner = $2 AND token = $3",
    )
    .bind(&lease.name)
    .bind(&lease.owner)
    .bind(lease.token)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn leases(pool: &PgPool) -> Result<Vec<Lease>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {LEASE_COLUMNS} FROM leases ORDER BY name"))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(lease_row).collect())
}

/// The fence as a CTE `fence` holding one row while it holds, share-locked
/// until the statement's write commits: a takeover (which updates that row)
/// waits for the write, or the write sees the takeover and does nothing.
/// Parameters `$1` (name or message id) and `$2` (token).
fn fence_cte(fence: &Fence) -> &'static str {
    match fence {
        Fence::Lease { .. } => {
            "WITH fence AS (SELECT 1 FROM leases WHERE name = $1 AND token = $2 FOR SHARE)"
        }
        Fence::Claim { .. } => {
            "WITH fence AS (SELECT 1 FROM inbox WHERE id = $1 AND claim_token = $2 FOR SHARE)"
        }
    }
}

fn fence_params(fence: &Fence) -> (&str, i64) {
    match fence {
        Fence::Lease { name, token } => (name, *token),
        Fence::Claim { message_id, token } => (message_id, *token),
    }
}

/// Why a fenced write did nothing: the token moved on, or the lease or
/// message is gone.
async fn refusal(pool: &PgPool, fence: &Fence) -> StoreError {
    let (key, _) = fence_params(fence);
    let sql = match fence {
        Fence::Lease { .. } => "SELECT token FROM leases WHERE name = $1",
        Fence::Claim { .. } => "SELECT claim_token FROM inbox WHERE id = $1",
    };
    let current: Result<Option<i64>, _> =
        sqlx::query_scalar(sql).bind(key).fetch_optional(pool).await;
    match current {
        Ok(Some(now)) => StoreError::Fenced(format!(
            "{fence} no longer holds: the token is now {now} (another replica took over)"
        )),
        Ok(None) => StoreError::Fenced(format!("{fence} no longer holds: it is gone")),
        Err(e) => e.into(),
    }
}

pub(crate) async fn set_cursor_fenced(
    pool: &PgPool,
    fence: &Fence,
    flow: &str,
    value: &str,
) -> Result<(), StoreError> {
    let (key, token) = fence_params(fence);
    let done = sqlx::query(&format!(
        "{} INSERT INTO cursors (flow, value, updated_at) SELECT $3, $4, $5 FROM fence
         ON CONFLICT (flow) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        fence_cte(fence)
    ))
    .bind(key)
    .bind(token)
    .bind(flow)
    .bind(value)
    .bind(now())
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(refusal(pool, fence).await);
    }
    Ok(())
}

/// Several delivery records under one fence check, in one transaction: the
/// fence row stays share-locked until the commit, so a takeover (which
/// moves the token on) waits for these writes or refuses them.
pub(crate) async fn record_deliveries_fenced(
    pool: &PgPool,
    fence: &Fence,
    flow: &str,
    deliveries: &[(String, String, Option<String>)],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let (fence_key, token) = fence_params(fence);
    let at = now();
    let mut tx = pool.begin().await?;
    let held: Option<i32> =
        sqlx::query_scalar(&format!("{} SELECT 1 FROM fence", fence_cte(fence)))
            .bind(fence_key)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
    if held.is_none() {
        drop(tx);
        return Err(refusal(pool, fence).await);
    }
    super::execute_inserts(&mut tx, crate::inserts::deliveries(flow, deliveries, &at)).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn record_delivery_fenced(
    pool: &PgPool,
    fence: &Fence,
    flow: &str,
    key: &str,
    fingerprint: &str,
    target_id: Option<&str>,
) -> Result<(), StoreError> {
    let (fence_key, token) = fence_params(fence);
    let done = sqlx::query(&format!(
        "{} INSERT INTO deliveries (flow, record_key, fingerprint, target_id, delivered_at)
         SELECT $3, $4, $5, $6, $7 FROM fence
         ON CONFLICT (flow, record_key) DO UPDATE SET fingerprint = excluded.fingerprint,
           target_id = excluded.target_id, delivered_at = excluded.delivered_at",
        fence_cte(fence)
    ))
    .bind(fence_key)
    .bind(token)
    .bind(flow)
    .bind(key)
    .bind(fingerprint)
    .bind(target_id)
    .bind(now())
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(refusal(pool, fence).await);
    }
    Ok(())
}

/// Extend a live claim (zero: give it back, claimable at once).
pub(crate) async fn inbox_renew(
    pool: &PgPool,
    fence: &Fence,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let Fence::Claim { message_id, token } = fence else {
        return Ok(false);
    };
    let done = sqlx::query(&format!(
        "UPDATE inbox SET claim_expires_at = {} WHERE id = $2 AND claim_token = $3
           AND claimed_by IS NOT NULL",
        expiry(1)
    ))
    .bind(micros(ttl))
    .bind(message_id)
    .bind(token)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A failed attempt: counted, the claim cleared, and not claimable again
/// before `retry_after` (NULL: at once).
pub(crate) async fn inbox_failed(
    pool: &PgPool,
    id: &str,
    reason: &str,
    retry_after: Duration,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "UPDATE inbox SET attempts = attempts + 1, last_error = $1, claimed_by = NULL,
           claim_expires_at = CASE WHEN $2::bigint > 0 THEN {} ELSE NULL END WHERE id = $3",
        expiry(2)
    ))
    .bind(reason)
    .bind(micros(retry_after))
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The oldest claimable messages, locked with `SKIP LOCKED`: a message
/// another claimer is taking at this moment is skipped, not waited for, and
/// one it has just taken no longer matches when re-checked.
pub(crate) async fn inbox_claim(
    pool: &PgPool,
    owner: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Vec<ClaimedMessage>, StoreError> {
    let rows = sqlx::query(&format!(
        "UPDATE inbox SET claimed_by = $1, claim_expires_at = {}, claim_token = claim_token + 1
         WHERE id IN (
           SELECT id FROM inbox
           WHERE state = 'pending'
             AND (claim_expires_at IS NULL OR claim_expires_at <= bridge_stamp(now()))
           ORDER BY received_at, id LIMIT $3
           FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, sealed_body, received_at, attempts, api_key_id, claimed_by, claim_token",
        expiry(2)
    ))
    .bind(owner)
    .bind(micros(ttl))
    .bind(limit.max(0))
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

/// The `(scope, slots)` whose slot rows this process knows exist.
#[derive(Debug, Default)]
pub(crate) struct SlotRows(std::sync::Mutex<std::collections::HashSet<(String, u32)>>);

impl SlotRows {
    fn known(&self, scope: &str, slots: u32) -> bool {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.contains(&(scope.to_string(), slots))
    }

    fn note(&self, scope: &str, slots: u32) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert((scope.to_string(), slots));
    }
}

/// A free slot, taken in one statement (`SKIP LOCKED`: concurrent takers
/// get different slots). The slot rows are created first, once per process
/// and scope: a taker that found no row to take because the rows did not
/// exist yet would wrongly answer "all taken".
pub(crate) async fn slot_acquire(
    pool: &PgPool,
    rows: &SlotRows,
    scope: &str,
    slots: u32,
    owner: &str,
    ttl: Duration,
) -> Result<Option<u32>, StoreError> {
    if !rows.known(scope, slots) {
        sqlx::query(
            "INSERT INTO partner_slots (scope, slot)
             SELECT $1, s FROM generate_series(0, $2::bigint - 1) AS s
             ON CONFLICT (scope, slot) DO NOTHING",
        )
        .bind(scope)
        .bind(i64::from(slots))
        .execute(pool)
        .await?;
        rows.note(scope, slots);
    }
    let slot: Option<i64> = sqlx::query_scalar(&format!(
        "UPDATE partner_slots SET owner = $1, expires_at = {}
         WHERE scope = $3 AND slot = (
           SELECT slot FROM partner_slots
           WHERE scope = $3 AND slot < $4 AND (owner IS NULL OR expires_at <= bridge_stamp(now()))
           ORDER BY slot LIMIT 1
           FOR UPDATE SKIP LOCKED)
         RETURNING slot",
        expiry(2)
    ))
    .bind(owner)
    .bind(micros(ttl))
    .bind(scope)
    .bind(i64::from(slots))
    .fetch_optional(pool)
    .await?;
    Ok(slot.and_then(|s| u32::try_from(s).ok()))
}

pub(crate) async fn slot_release(
    pool: &PgPool,
    scope: &str,
    slot: u32,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE partner_slots SET owner = NULL, expires_at = NULL
         WHERE scope = $1 AND slot = $2 AND owner = $3",
    )
    .bind(scope)
    .bind(i64::from(slot))
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// GCRA in one statement on the database's clock: the call may go at
/// max(tat, now); the next one `interval` later.
pub(crate) async fn rate_reserve(
    pool: &PgPool,
    scope: &str,
    interval: Duration,
) -> Result<Duration, StoreError> {
    let step = micros(interval).max(1);
    let row = sqlx::query(
        "WITH t AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS now_us)
         INSERT INTO partner_rates (scope, tat_us) SELECT $1, t.now_us + $2 FROM t
         ON CONFLICT (scope) DO UPDATE
           SET tat_us = GREATEST(partner_rates.tat_us, excluded.tat_us - $2) + $2
         RETURNING tat_us, (SELECT now_us FROM t)",
    )
    .bind(scope)
    .bind(step)
    .fetch_one(pool)
    .await?;
    let (next, now_us): (i64, i64) = (row.get(0), row.get(1));
    let send_at = next - step;
    Ok(Duration::from_micros(
        u64::try_from(send_at - now_us).unwrap_or(0),
    ))
}

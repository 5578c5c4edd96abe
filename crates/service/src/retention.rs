//! Audit retention (`[audit] retain_days`): the running service removes
//! entries older than the retention once at start and then once a day. The
//! store keeps the last removed entry as the chain's anchor, so what remains
//! still verifies; a chain that does not verify is never pruned (the
//! evidence stays, and an error is logged every day until someone looks).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use bridge_store::{Store, StoreError};

/// How often the service prunes.
pub const INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The cut-off for a retention of `days` at `now`: RFC 3339 UTC.
pub fn cutoff(days: u32, now: DateTime<Utc>) -> String {
    (now - chrono::Duration::days(i64::from(days))).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Prune once; returns how many entries were removed.
pub async fn prune_once(store: &dyn Store, days: u32) -> Result<u64, StoreError> {
    let before = cutoff(days, Utc::now());
    let removed = store.audit_prune(&before).await?;
    if removed > 0 {
        tracing::info!(count = removed, to = %before, "audit trail: entries past retention removed");
    }
    Ok(removed)
}

/// Prune now and then every [`INTERVAL`], until the task is aborted.
pub async fn run(store: Arc<dyn Store>, days: u32) {
    loop {
        if let Err(e) = prune_once(store.as_ref(), days).await {
            tracing::error!(code = e.code(), error = %e, "audit trail retention failed");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_store::{AuditEntry, AuditFilter, SqliteStore};

    #[test]
    fn cutoff_is_days_before_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-10T08:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(cutoff(10, now), "2026-11-30T08:30:00.000Z");
    }

    #[tokio::test]
    async fn prune_once_removes_what_is_past_retention_and_keeps_the_chain() {
        let store = SqliteStore::in_memory().await.unwrap();
        let at = |days_ago: i64| {
            (Utc::now() - chrono::Duration::days(days_ago))
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        let entry = |at: String| AuditEntry {
            at,
            flow: "ping-1.2".into(),
            run_id: "r".into(),
            event: "delivered".into(),
            source_id: "s".into(),
            target_id: None,
            case_id: None,
            permitted_by: None,
            consent: "recorded".into(),
            job: "ping-1.2".into(),
            job_version: "1".into(),
            job_hash: "h".into(),
            mappings_hash: "m".into(),
        };
        store
            .audit_append(&[entry(at(40)), entry(at(31)), entry(at(2))])
            .await
            .unwrap();
        assert_eq!(prune_once(&store, 30).await.unwrap(), 2);
        assert_eq!(prune_once(&store, 30).await.unwrap(), 0);
        let left = store.audit_list(&AuditFilter::default()).await.unwrap();
        assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        let v = store.audit_verify().await.unwrap();
        assert!(v.ok() && v.anchor.seq == 2, "{v:?}");
    }
}

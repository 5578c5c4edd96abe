//! [`bridge_store::Monitored`] over each backend: a failure is the store's
//! fault until a success clears it (a failed write only by a write).

use bridge_store::audit::AuditEntry;

use crate::Backend;

pub async fn a_failed_call_is_the_fault_until_a_success_clears_it(b: Backend) {
    let s = b.monitored().await;
    s.set_cursor("f", "v1").await.unwrap();
    assert_eq!(s.fault(), None);
    // The table goes away under the store: reads and writes fail.
    b.exec("DROP TABLE cursors").await.unwrap();
    assert!(s.cursor("f").await.is_err());
    assert_eq!(s.fault(), Some("store-error"));
    // A read elsewhere succeeds: a failed read is cleared.
    s.runs(None, 1).await.unwrap();
    assert_eq!(s.fault(), None);
    let e = s.set_cursor("f", "v2").await.unwrap_err();
    assert_eq!(e.code(), "store-error");
    assert_eq!(s.fault(), Some("store-error"));
    // A failed write is cleared by a write only.
    s.runs(None, 1).await.unwrap();
    assert_eq!(s.fault(), Some("store-error"));
    b.exec("CREATE TABLE cursors (flow TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)")
        .await
        .unwrap();
    s.set_cursor("f", "v3").await.unwrap();
    assert_eq!(s.fault(), None);
    assert_eq!(s.cursor("f").await.unwrap().as_deref(), Some("v3"));
    s.verify().await.unwrap();
}

pub async fn a_refused_audit_entry_is_not_a_store_fault(b: Backend) {
    let s = b.monitored().await;
    let e = AuditEntry {
        at: bridge_store::now(),
        flow: "ping-1.1".into(),
        run_id: "r".into(),
        event: "shared".into(),
        source_id: "s".into(),
        target_id: None,
        case_id: None,
        permitted_by: None,
        consent: "recorded".into(),
        job: "ping-1.1".into(),
        job_version: "1".into(),
        job_hash: "h".into(),
        mappings_hash: "m".into(),
    };
    assert!(s.audit_append(&[e]).await.is_err());
    assert_eq!(s.fault(), None);
}

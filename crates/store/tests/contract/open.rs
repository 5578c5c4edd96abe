//! Opening: what `--init` creates, what is refused, and the writer lease.

use bridge_store::{Holder, OpenMode, StoreError};

use crate::Backend;

pub async fn an_existing_database_is_required_without_init(b: Backend) {
    let e = b.open(OpenMode::Existing).await.err().expect("refused");
    assert_eq!(e.code(), "store-missing", "{e}");
    let text = e.to_string();
    assert!(text.contains("--init"), "{text}");
    assert!(text.contains("docs/operator/state.md"), "{text}");
    if b.is_postgres() {
        assert!(matches!(e, StoreError::NoSchema { .. }), "{e:?}");
        assert!(text.contains("state.url"), "{text}");
    }
}

pub async fn init_creates_and_a_second_open_finds_the_same_state(b: Backend) {
    b.store().await.set_cursor("f", "v1").await.unwrap();
    // Init on an existing bridge database opens it (and changes nothing).
    let again = b.open(OpenMode::Init).await.unwrap();
    assert_eq!(again.cursor("f").await.unwrap().as_deref(), Some("v1"));
    let existing = b.open(OpenMode::Existing).await.unwrap();
    existing.set_cursor("f", "v2").await.unwrap();
    assert_eq!(again.cursor("f").await.unwrap().as_deref(), Some("v2"));
    existing.verify().await.unwrap();
}

pub async fn a_database_of_another_application_is_refused(b: Backend) {
    b.exec("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    for mode in [OpenMode::Init, OpenMode::Existing] {
        let e = b.open(mode).await.err().expect("refused");
        assert_eq!(e.code(), "store-foreign", "{mode:?}: {e}");
        assert!(e.to_string().contains("not a bridge state database"), "{e}");
    }
    // Nothing was created beside the other application's table.
    assert!(b.exec("SELECT * FROM cursors").await.is_err());
}

pub async fn the_writer_lease_matches_the_backend(b: Backend) {
    let first = b.store().await;
    let second = b.open(OpenMode::Existing).await.unwrap();
    let mut holder = Holder::current();
    holder.command = "bridge run --config bridge.toml".into();
    let lease = first.acquire_writer(&holder).await.unwrap();
    assert_eq!(lease.holder(), &holder);
    let other = second.acquire_writer(&Holder::current()).await;
    if b.is_postgres() {
        // Replicas share a PostgreSQL database: nobody is excluded.
        assert!(other.is_ok(), "{other:?}");
    } else {
        let e = other.expect_err("a second writer is refused");
        assert_eq!(e.code(), "store-locked");
        assert!(
            e.to_string().contains("bridge run --config bridge.toml"),
            "{e}"
        );
        drop(lease);
        second.acquire_writer(&Holder::current()).await.unwrap();
    }
}

/// What a dry run works on: the state as it is, in a private copy; what the
/// dry run writes stays there.
pub async fn a_dry_run_copy_holds_the_state_and_writes_nothing_back(b: Backend) {
    let s = b.store().await;
    s.set_cursor("ping-1.2", "2026-01-01T00:00:00.000Z")
        .await
        .unwrap();
    s.record_delivery("ping-1.2", "case/svc", "fp", Some("t1"))
        .await
        .unwrap();
    s.attempt_failed("ping-1.1", "iv-1", "http-503")
        .await
        .unwrap();
    s.dead_letter_put("ping-1.1", "iv-2", "mapping", "no code", 3, None)
        .await
        .unwrap();
    s.case_shared("case-1", "ping-2.1").await.unwrap();
    s.run_started(&bridge_store::RunRow {
        id: "r1".into(),
        flow: "ping-1.1".into(),
        trigger: "manual".into(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
        outcome: "running".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let scratch = b.scratch().await;
    assert_eq!(
        scratch.cursor("ping-1.2").await.unwrap().as_deref(),
        Some("2026-01-01T00:00:00.000Z")
    );
    assert_eq!(
        scratch.delivery("ping-1.2", "case/svc").await.unwrap(),
        s.delivery("ping-1.2", "case/svc").await.unwrap()
    );
    assert_eq!(scratch.attempts("ping-1.1", "iv-1").await.unwrap(), 1);
    assert_eq!(
        scratch.dead_letters(None).await.unwrap(),
        s.dead_letters(None).await.unwrap()
    );
    assert_eq!(
        scratch.shared_cases().await.unwrap(),
        [("case-1".to_string(), false)]
    );
    assert_eq!(
        scratch.runs(None, 10).await.unwrap(),
        s.runs(None, 10).await.unwrap()
    );
    // The dry run's writes stay in the copy.
    scratch
        .set_cursor("ping-1.2", "2027-01-01T00:00:00.000Z")
        .await
        .unwrap();
    scratch
        .record_delivery("ping-1.2", "case/other", "fp", None)
        .await
        .unwrap();
    let id = scratch.dead_letters(None).await.unwrap()[0].id;
    assert!(scratch.dead_letter_release(id).await.unwrap());
    assert_eq!(
        s.cursor("ping-1.2").await.unwrap().as_deref(),
        Some("2026-01-01T00:00:00.000Z")
    );
    assert!(s
        .delivery("ping-1.2", "case/other")
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.dead_letters(None).await.unwrap().len(), 1);
}

/// A dry run of a deployment without a database starts from nothing and
/// creates nothing (not even the bridge's tables).
pub async fn a_dry_run_without_a_database_starts_empty_and_creates_nothing(b: Backend) {
    let scratch = b.scratch().await;
    assert_eq!(scratch.cursor("ping-1.2").await.unwrap(), None);
    scratch.set_cursor("ping-1.2", "v").await.unwrap();
    let e = b
        .open(OpenMode::Existing)
        .await
        .err()
        .expect("still no database");
    assert_eq!(e.code(), "store-missing", "{e}");
}

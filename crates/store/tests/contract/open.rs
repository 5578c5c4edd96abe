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

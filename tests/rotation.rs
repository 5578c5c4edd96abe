//! Rotation without downtime (docs/operator/rotation.md): several inbox API
//! keys at once, each message recorded with its key's id; a seal key ring and
//! `bridge inbox reseal`; a message no key opens is named and kept.

use std::process::Command;
use std::sync::Arc;

use bridge_inbox::INBOX_PATH;
use bridge_inbox::{router, InboxState, DEFAULT_MAX_BODY_BYTES};
use bridge_sim::dtp::referral_message;
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_store::{OpenMode, Sealer, SqliteStore, Store};
use bridge_testkit::cli::text;

const OLD_KEY: &str = "inbox-old-key-0123456789-abcdef";
const NEW_KEY: &str = "inbox-new-key-9876543210-fedcba";

async fn serve(state: InboxState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    format!("http://{addr}{INBOX_PATH}")
}

async fn post(url: &str, key: &str, n: u64) -> (u16, serde_json::Value) {
    let person = PeopleGenerator::new(n).person();
    let body = referral_message(&[SimIntervention::for_person(person, n)]);
    let r = reqwest::Client::new()
        .post(url)
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn two_api_keys_during_a_rotation_each_message_records_its_key_id() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Init)
            .await
            .unwrap(),
    );
    let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let window = [
        ("2026-06".to_string(), OLD_KEY.to_string()),
        ("2026-12".to_string(), NEW_KEY.to_string()),
    ];
    let state = InboxState::new(store.clone(), sealer.clone(), "", DEFAULT_MAX_BODY_BYTES)
        .with_keys(&window);
    let url = serve(state).await;
    let (old, _) = post(&url, OLD_KEY, 1).await;
    let (new, _) = post(&url, NEW_KEY, 2).await;
    assert_eq!((old, new), (202, 202), "both keys valid in the window");
    let ids: Vec<Option<String>> = store
        .inbox_all()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.api_key_id)
        .collect();
    assert!(
        ids.contains(&Some("2026-06".into())) && ids.contains(&Some("2026-12".into())),
        "{ids:?}"
    );
    let db = std::fs::read(tmp.path().join("state.db")).unwrap_or_default();
    for key in [OLD_KEY, NEW_KEY] {
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes()),
            "a key value is stored"
        );
    }

    // The window closes: only the new key.
    let after = InboxState::new(store.clone(), sealer, "", DEFAULT_MAX_BODY_BYTES)
        .with_keys(&[("2026-12".to_string(), NEW_KEY.to_string())]);
    let url = serve(after).await;
    assert_eq!(post(&url, OLD_KEY, 3).await.0, 401);
    assert_eq!(post(&url, NEW_KEY, 4).await.0, 202);
}

#[tokio::test]
async fn reseal_moves_kept_messages_to_the_current_key_and_names_one_no_key_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, lost) = (
        Sealer::generate_key_hex(),
        Sealer::generate_key_hex(),
        Sealer::generate_key_hex(),
    );
    {
        let store = SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Init)
            .await
            .unwrap();
        let by_old = Sealer::from_hex(&old).unwrap();
        for id in ["m-old-1", "m-old-2"] {
            let sealed = by_old.seal(id, b"{\"x\":1}").unwrap();
            store
                .inbox_put(id, "PrimeroOutgoingReferral", "k", &sealed)
                .await
                .unwrap();
        }
        let by_lost = Sealer::from_hex(&lost).unwrap();
        let sealed = by_lost.seal("m-lost", b"{\"x\":1}").unwrap();
        store
            .inbox_put("m-lost", "PrimeroOutgoingReferral", "k", &sealed)
            .await
            .unwrap();
        // Closed before another process writes the file (see `close`).
        store.close().await;
    }
    for (name, value) in [("old", &old), ("new", &new), ("api", &NEW_KEY.to_string())] {
        std::fs::write(tmp.path().join(name), value).unwrap();
    }
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        "[state]\npath = \"state.db\"\n\n[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { file = \"api\" }\n\n[jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n\n[inbox]\napi_keys = [{ id = \"2026-12\", key = { file = \"api\" } }]\nseal_key = { file = \"new\" }\nprevious_seal_keys = [{ file = \"old\" }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["inbox", "reseal", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("re-sealed 2 message(s)"), "{said}");
    assert!(
        said.contains("inbox message m-lost") && said.contains("no configured seal key opens it"),
        "{said}"
    );
    assert!(
        !said.contains(&new) && !said.contains(&old),
        "a key was printed"
    );

    // The new key alone now opens the re-sealed ones; the lost one is kept as it was.
    let store = SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Existing)
        .await
        .unwrap();
    let new_only = Sealer::from_hex(&new).unwrap();
    let by_lost = Sealer::from_hex(&lost).unwrap();
    for m in store.inbox_all().await.unwrap() {
        if m.id == "m-lost" {
            assert!(
                by_lost.open(&m.id, &m.sealed_body).is_ok(),
                "kept unchanged"
            );
        } else {
            let by_old = Sealer::from_hex(&old).unwrap();
            assert!(
                new_only.open(&m.id, &m.sealed_body).is_ok(),
                "{}: old key opens it: {}; output: {said}",
                m.id,
                by_old.open(&m.id, &m.sealed_body).is_ok()
            );
        }
    }
}

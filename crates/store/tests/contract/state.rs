//! Cursors, deliveries, the inbox, runs, attempts and the dead letter.

use bridge_store::{OpenMode, RecordRow, RunRow};

use crate::Backend;

pub async fn cursor_delivery_and_inbox_survive_reopen(b: Backend) {
    {
        let s = b.store().await;
        assert_eq!(s.cursor("f").await.unwrap(), None);
        s.set_cursor("f", "2025-01-01T00:00:00.000Z").await.unwrap();
        s.set_cursor("f", "2025-01-02T00:00:00.000Z").await.unwrap();
        s.record_delivery("f", "case/svc", "accepted", Some("t1"))
            .await
            .unwrap();
        s.inbox_put("m1", "PrimeroOutgoingReferral", "k1", b"sealed")
            .await
            .unwrap();
        s.inbox_failed("m1", "partner-unavailable", std::time::Duration::ZERO)
            .await
            .unwrap();
    }
    let s = b.open(OpenMode::Existing).await.unwrap();
    assert_eq!(
        s.cursor("f").await.unwrap().as_deref(),
        Some("2025-01-02T00:00:00.000Z")
    );
    assert_eq!(s.cursor("other").await.unwrap(), None);
    let d = s.delivery("f", "case/svc").await.unwrap().unwrap();
    assert_eq!(d.fingerprint, "accepted");
    assert_eq!(d.target_id.as_deref(), Some("t1"));
    assert!(d.delivered_at.ends_with('Z'), "{}", d.delivered_at);
    let pending = s.inbox_pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].sealed_body, b"sealed");
    assert_eq!(pending[0].api_key_id.as_deref(), Some("k1"));
    s.inbox_delete("m1").await.unwrap();
    assert!(s.inbox_pending().await.unwrap().is_empty());
}

pub async fn deliveries_are_replaced_and_found_by_fingerprint(b: Backend) {
    let s = b.store().await;
    assert!(s.delivery("f", "k1").await.unwrap().is_none());
    s.record_delivery("f", "k1", "no-consent", None)
        .await
        .unwrap();
    s.record_delivery("f", "k2", "no-consent", None)
        .await
        .unwrap();
    s.record_delivery("g", "k3", "no-consent", None)
        .await
        .unwrap();
    let mut keys = s.delivery_keys("f", "no-consent").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["k1", "k2"]);
    // Delivered after all: the new fingerprint replaces the old one.
    s.record_delivery("f", "k1", "sha:abc", Some("case-9"))
        .await
        .unwrap();
    let d = s.delivery("f", "k1").await.unwrap().unwrap();
    assert_eq!(
        (d.fingerprint.as_str(), d.target_id.as_deref()),
        ("sha:abc", Some("case-9"))
    );
    assert_eq!(s.delivery_keys("f", "no-consent").await.unwrap(), ["k2"]);
    assert!(s.delivery_keys("f", "other").await.unwrap().is_empty());
}

pub async fn the_inbox_keeps_order_state_and_attempts(b: Backend) {
    let s = b.store().await;
    for id in ["m1", "m2", "m3"] {
        s.inbox_put(id, "kind", "api_key", id.as_bytes())
            .await
            .unwrap();
        // Received one after the other: distinct millisecond times.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // The same receipt id twice is refused (the sender is told to resend).
    assert!(s.inbox_put("m1", "kind", "api_key", b"x").await.is_err());
    let ids = |v: Vec<bridge_store::InboxMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(s.inbox_pending().await.unwrap()), ["m1", "m2", "m3"]);
    s.inbox_failed("m2", "partner-unavailable", std::time::Duration::ZERO)
        .await
        .unwrap();
    s.inbox_failed("m2", "partner-unavailable", std::time::Duration::ZERO)
        .await
        .unwrap();
    s.inbox_set_dead("m2", "too-many-attempts").await.unwrap();
    assert_eq!(ids(s.inbox_pending().await.unwrap()), ["m1", "m3"]);
    assert_eq!(ids(s.inbox_all().await.unwrap()), ["m1", "m2", "m3"]);
    assert_eq!(
        s.inbox_states().await.unwrap(),
        [
            ("m1".to_string(), "pending".to_string()),
            ("m2".into(), "dead".into()),
            ("m3".into(), "pending".into())
        ]
    );
    // Only a dead message is revived, once, with its attempts reset.
    assert!(!s.inbox_revive("m1").await.unwrap());
    assert!(s.inbox_revive("m2").await.unwrap());
    assert!(!s.inbox_revive("m2").await.unwrap());
    let pending = s.inbox_pending().await.unwrap();
    assert_eq!(ids(pending.clone()), ["m1", "m2", "m3"]);
    assert_eq!(pending[1].attempts, 0);
    for id in ["m1", "m2", "m3"] {
        s.inbox_delete(id).await.unwrap();
    }
    // Deleting what is gone is no error (a second processor finished it).
    s.inbox_delete("m1").await.unwrap();
    assert!(s.inbox_all().await.unwrap().is_empty());
}

pub async fn a_reseal_replaces_only_the_body_it_was_given(b: Backend) {
    let s = b.store().await;
    s.inbox_put("m1", "kind", "k", b"old-body").await.unwrap();
    assert!(!s.inbox_reseal("m1", b"other", b"new-body").await.unwrap());
    assert!(s
        .inbox_reseal("m1", b"old-body", b"new-body")
        .await
        .unwrap());
    assert!(!s.inbox_reseal("gone", b"old-body", b"x").await.unwrap());
    assert_eq!(s.inbox_all().await.unwrap()[0].sealed_body, b"new-body");
}

fn run(id: &str, flow: &str, started_at: &str) -> RunRow {
    RunRow {
        id: id.into(),
        flow: flow.into(),
        trigger: "manual".into(),
        started_at: started_at.into(),
        outcome: "running".into(),
        ..RunRow::default()
    }
}

fn record(run_id: &str, i: usize, status: &str) -> RecordRow {
    RecordRow {
        run_id: run_id.into(),
        flow: "ping-1.1".into(),
        source_id: format!("src-{i}"),
        target_id: (status == "created").then(|| format!("case-{i}")),
        status: status.into(),
        attempt: i64::from(status == "failed"),
        reason_code: (status == "failed").then(|| "partner-unavailable".into()),
        reason: (status == "failed").then(|| "partner-unavailable: HTTP 503".into()),
        at: "2026-01-01T00:00:01.000Z".into(),
    }
}

pub async fn runs_keep_their_counts_records_and_order(b: Backend) {
    let s = b.store().await;
    assert_eq!(s.last_run_started("ping-1.1").await.unwrap(), None);
    s.run_started(&run("r1", "ping-1.1", "2026-01-01T00:00:00.000Z"))
        .await
        .unwrap();
    s.run_started(&run("r2", "ping-1.1", "2026-01-01T01:00:00.000Z"))
        .await
        .unwrap();
    s.run_started(&run("r3", "ping-2.1", "2026-01-01T02:00:00.000Z"))
        .await
        .unwrap();
    let mut done = run("r1", "ping-1.1", "2026-01-01T00:00:00.000Z");
    done.ended_at = Some("2026-01-01T00:00:05.000Z".into());
    done.fetched = 3;
    done.delivered = 2;
    done.failed = 1;
    done.outcome = "partial".into();
    done.job_hash = Some("ab".repeat(32));
    done.mappings_hash = Some("cd".repeat(32));
    let records = vec![
        record("r1", 2, "created"),
        record("r1", 0, "failed"),
        record("r1", 1, "created"),
    ];
    s.run_finished(&done, &records).await.unwrap();
    assert_eq!(s.run("r1").await.unwrap().unwrap(), done);
    assert!(s.run("nope").await.unwrap().is_none());
    // Records in the order reported, not sorted.
    assert_eq!(s.run_records("r1").await.unwrap(), records);
    assert!(s.run_records("r2").await.unwrap().is_empty());
    let ids = |v: Vec<RunRow>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(s.runs(None, 10).await.unwrap()), ["r3", "r2", "r1"]);
    assert_eq!(
        ids(s.runs(Some("ping-1.1"), 10).await.unwrap()),
        ["r2", "r1"]
    );
    assert_eq!(ids(s.runs(None, 1).await.unwrap()), ["r3"]);
    assert_eq!(ids(s.runs(None, -1).await.unwrap()).len(), 3);
    assert_eq!(
        s.last_run_started("ping-1.1").await.unwrap().as_deref(),
        Some("2026-01-01T01:00:00.000Z")
    );
    let r = s.run("r1").await.unwrap().unwrap();
    assert!(r.got_through());
    assert_eq!(
        records[1].why().as_deref(),
        Some("partner-unavailable: HTTP 503")
    );
}

pub async fn running_runs_become_interrupted(b: Backend) {
    let s = b.store().await;
    s.run_started(&run("r1", "ping-1.1", "2026-01-01T00:00:00.000Z"))
        .await
        .unwrap();
    s.run_started(&run("r2", "ping-1.1", "2026-01-01T00:01:00.000Z"))
        .await
        .unwrap();
    let mut done = run("r2", "ping-1.1", "2026-01-01T00:01:00.000Z");
    done.ended_at = Some("2026-01-01T00:01:05.000Z".into());
    done.outcome = "ok".into();
    s.run_finished(&done, &[]).await.unwrap();
    assert_eq!(s.interrupt_running().await.unwrap(), 1);
    assert_eq!(s.interrupt_running().await.unwrap(), 0);
    let r1 = s.run("r1").await.unwrap().unwrap();
    assert_eq!(r1.outcome, "interrupted");
    assert!(r1.ended_at.is_some());
    assert!(!r1.got_through());
    assert_eq!(s.run("r2").await.unwrap().unwrap().outcome, "ok");
}

pub async fn a_flows_running_runs_become_interrupted_by_its_lease_holder(b: Backend) {
    let s = b.store().await;
    for (id, flow) in [("r1", "ping-1.1"), ("r2", "ping-1.1"), ("r3", "ping-2.1")] {
        s.run_started(&run(id, flow, "2026-01-01T00:00:00.000Z"))
            .await
            .unwrap();
    }
    let mut done = run("r4", "ping-1.1", "2026-01-01T00:00:00.000Z");
    s.run_started(&done).await.unwrap();
    done.ended_at = Some("2026-01-01T00:01:05.000Z".into());
    done.outcome = "ok".into();
    s.run_finished(&done, &[]).await.unwrap();
    // Only this flow's runs still going, whatever leases or clocks say.
    assert_eq!(s.interrupt_flow_runs("ping-1.1").await.unwrap(), 2);
    assert_eq!(s.interrupt_flow_runs("ping-1.1").await.unwrap(), 0);
    assert_eq!(s.run("r1").await.unwrap().unwrap().outcome, "interrupted");
    assert!(s.run("r2").await.unwrap().unwrap().ended_at.is_some());
    assert_eq!(s.run("r3").await.unwrap().unwrap().outcome, "running");
    assert_eq!(s.run("r4").await.unwrap().unwrap().outcome, "ok");
}

pub async fn attempts_count_up_and_clear(b: Backend) {
    let s = b.store().await;
    assert_eq!(s.attempts("f", "a").await.unwrap(), 0);
    assert_eq!(s.attempt_failed("f", "a", "http-503").await.unwrap(), 1);
    assert_eq!(s.attempt_failed("f", "a", "http-500").await.unwrap(), 2);
    assert_eq!(s.attempt_failed("f", "b", "http-503").await.unwrap(), 1);
    assert_eq!(s.attempt_failed("g", "a", "http-503").await.unwrap(), 1);
    assert_eq!(s.attempts("f", "a").await.unwrap(), 2);
    let mut all = s.attempts_all("f").await.unwrap();
    all.sort();
    assert_eq!(all, [("a".to_string(), 2), ("b".to_string(), 1)]);
    s.clear_attempts("f", "a").await.unwrap();
    assert_eq!(s.attempts("f", "a").await.unwrap(), 0);
    assert_eq!(s.attempts("g", "a").await.unwrap(), 1);
    assert_eq!(s.attempt_failed("f", "a", "http-503").await.unwrap(), 1);
}

pub async fn the_dead_letter_holds_one_active_entry_per_record(b: Backend) {
    let s = b.store().await;
    s.dead_letter_put(
        "f",
        "a",
        "partner-unavailable",
        "HTTP 503",
        3,
        Some("2026-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    // Already there: nothing changes.
    s.dead_letter_put("f", "a", "other", "other", 9, None)
        .await
        .unwrap();
    s.dead_letter_put("g", "b", "mapping", "no code", 1, None)
        .await
        .unwrap();
    let all = s.dead_letters(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].source_id.as_str(),
            all[0].reason_code.as_str(),
            all[0].attempts
        ),
        ("a", "partner-unavailable", 3)
    );
    assert_eq!(all[0].cursor_hint.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert!(all[0].id < all[1].id);
    assert_eq!(s.dead_letters(Some("g")).await.unwrap().len(), 1);
    let found = s.dead_letter_find("f", "a").await.unwrap().unwrap();
    assert_eq!(found, all[0]);
    assert_eq!(s.dead_letter_get(found.id).await.unwrap().unwrap(), found);
    assert!(s.dead_letter_find("f", "zz").await.unwrap().is_none());
    assert!(s.dead_letter_get(found.id + 100).await.unwrap().is_none());
}

pub async fn a_released_entry_forgets_the_attempts_and_may_return(b: Backend) {
    let s = b.store().await;
    s.attempt_failed("f", "a", "x").await.unwrap();
    s.attempt_failed("f", "a", "x").await.unwrap();
    s.dead_letter_put("f", "a", "x", "x", 2, None)
        .await
        .unwrap();
    let id = s.dead_letter_find("f", "a").await.unwrap().unwrap().id;
    assert!(s.dead_letter_release(id).await.unwrap());
    assert!(!s.dead_letter_release(id).await.unwrap());
    assert!(!s.dead_letter_release(id + 100).await.unwrap());
    assert_eq!(s.attempts("f", "a").await.unwrap(), 0);
    assert!(s.dead_letters(None).await.unwrap().is_empty());
    let released = s.dead_letter_get(id).await.unwrap().unwrap();
    assert!(released.replayed_at.is_some());
    // It fails again: a new active entry beside the replayed one.
    s.dead_letter_put("f", "a", "x", "x", 2, None)
        .await
        .unwrap();
    let again = s.dead_letter_find("f", "a").await.unwrap().unwrap();
    assert_ne!(again.id, id);
}

pub async fn a_run_with_ten_thousand_records_is_kept_whole(b: Backend) {
    let s = b.store().await;
    s.run_started(&run("big", "ping-1.1", "2026-01-01T00:00:00.000Z"))
        .await
        .unwrap();
    let records: Vec<RecordRow> = (0..10_000)
        .map(|i| record("big", i, if i % 7 == 0 { "failed" } else { "created" }))
        .collect();
    let mut done = run("big", "ping-1.1", "2026-01-01T00:00:00.000Z");
    done.ended_at = Some("2026-01-01T00:10:00.000Z".into());
    done.outcome = "partial".into();
    s.run_finished(&done, &records).await.unwrap();
    assert_eq!(s.run_records("big").await.unwrap(), records);
}

/// A page's deliveries in one call: more rows than one statement holds, a
/// key given twice (its last row wins), the same again under a lease.
pub async fn a_batch_of_deliveries_is_recorded_whole_and_a_repeated_key_keeps_its_last_row(
    b: Backend,
) {
    let s = b.store().await;
    s.record_delivery("f", "k0", "old", None).await.unwrap();
    let mut batch: Vec<(String, String, Option<String>)> = (0..1_200)
        .map(|i| (format!("k{i}"), "submitted".to_string(), None))
        .collect();
    batch.push(("k7".into(), "confirmed".into(), Some("t7".into())));
    s.record_deliveries("f", &batch).await.unwrap();
    let keys = s.delivery_keys("f", "submitted").await.unwrap();
    assert_eq!(keys.len(), 1_199, "every key but k7, k0 replaced");
    let k7 = s.delivery("f", "k7").await.unwrap().unwrap();
    assert_eq!(
        (k7.fingerprint.as_str(), k7.target_id.as_deref()),
        ("confirmed", Some("t7"))
    );
    assert_eq!(
        s.delivery("f", "k0").await.unwrap().unwrap().fingerprint,
        "submitted"
    );

    let lease = s
        .lease_acquire("flow:f", "me", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let confirmed: Vec<(String, String, Option<String>)> = (0..1_200)
        .map(|i| {
            (
                format!("k{i}"),
                "confirmed".to_string(),
                Some(format!("t{i}")),
            )
        })
        .collect();
    s.record_deliveries_fenced(&lease.fence(), "f", &confirmed)
        .await
        .unwrap();
    assert_eq!(
        s.delivery_keys("f", "confirmed").await.unwrap().len(),
        1_200
    );
    let last = s.delivery("f", "k1199").await.unwrap().unwrap();
    assert_eq!(last.target_id.as_deref(), Some("t1199"));

    // Looked up together: those with a record, whatever the number asked.
    let asked: Vec<String> = (0..1_300).map(|i| format!("k{i}")).collect();
    let found = s.deliveries("f", &asked).await.unwrap();
    assert_eq!(found.len(), 1_200);
    assert_eq!(found["k7"].target_id.as_deref(), Some("t7"));
    assert!(!found.contains_key("k1200"));
    assert!(s.deliveries("other", &asked).await.unwrap().is_empty());
    assert!(s.deliveries("f", &[]).await.unwrap().is_empty());
}

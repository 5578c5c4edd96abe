//! The consent watch: shared cases and the alerts a loss of consent raises.

use bridge_store::OpenMode;

use crate::Backend;

pub async fn a_shared_case_losing_consent_raises_one_alert_until_consent_returns(b: Backend) {
    let store = b.store().await;
    // Never shared: nothing to raise.
    assert!(store
        .consent_lost("c1", "ping-2.1", "r1")
        .await
        .unwrap()
        .is_none());
    store.case_shared("c1", "ping-2.1").await.unwrap();
    store.case_shared("c1", "ping-1.2").await.unwrap();
    assert_eq!(
        store.shared_cases().await.unwrap(),
        [("c1".to_string(), false)]
    );
    let alert = store
        .consent_lost("c1", "ping-1.2", "r2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (alert.kind.as_str(), alert.case_id.as_str()),
        ("consent-revoked", "c1")
    );
    assert_eq!(
        store.shared_cases().await.unwrap(),
        [("c1".to_string(), true)]
    );
    // Seen again by another scan: no second alert.
    assert!(store
        .consent_lost("c1", "ping-2.1", "r3")
        .await
        .unwrap()
        .is_none());
    store.consent_present("c1").await.unwrap();
    assert!(store
        .consent_lost("c1", "ping-2.1", "r4")
        .await
        .unwrap()
        .is_some());
    let alerts = store.alerts(true).await.unwrap();
    assert_eq!(alerts.len(), 2);
    // Newest first.
    assert!(alerts[0].id > alerts[1].id);
    assert_eq!(alerts[1], alert);
}

pub async fn alerts_are_retried_when_due_and_kept_once_delivered(b: Backend) {
    let store = b.store().await;
    store.case_shared("c1", "dtp-2.1").await.unwrap();
    let a = store
        .consent_lost("c1", "dtp-2.1", "r1")
        .await
        .unwrap()
        .unwrap();
    let due = store.alerts_due(&bridge_store::now(), 10).await.unwrap();
    assert_eq!(due, vec![a.clone()]);
    store
        .alert_retry(a.id, "2999-01-01T00:00:00.000Z", "http-503")
        .await
        .unwrap();
    assert!(store
        .alerts_due(&bridge_store::now(), 10)
        .await
        .unwrap()
        .is_empty());
    let due = store
        .alerts_due("2999-01-01T00:00:00.000Z", 10)
        .await
        .unwrap();
    assert_eq!(
        (due[0].attempts, due[0].last_error.as_deref()),
        (1, Some("http-503"))
    );
    store.alert_delivered(a.id).await.unwrap();
    assert!(store.alerts(true).await.unwrap().is_empty());
    let all = store.alerts(false).await.unwrap();
    assert!(all[0].delivered_at.is_some());
    assert_eq!(all[0].attempts, 2);
    assert_eq!(all[0].last_error, None);
}

/// Two processes (replicas) scanning the same case at once raise one alert.
pub async fn concurrent_scans_raise_one_alert(b: Backend) {
    let first = b.store().await;
    let second = b.open(OpenMode::Existing).await.unwrap();
    for round in 0..5 {
        let case = format!("case-{round}");
        first.case_shared(&case, "ping-2.1").await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let case = case.clone();
                tokio::spawn(async move {
                    s.consent_lost(&case, "ping-2.1", &format!("run-{i}"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut raised = 0;
        for t in tasks {
            raised += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(raised, 1, "round {round}");
    }
    assert_eq!(first.alerts(false).await.unwrap().len(), 5);
}

/// A page's shared cases in one call: more than one statement holds, one
/// given twice and one shared before (its first flow stays).
pub async fn many_cases_shared_at_once_are_each_recorded_once(b: Backend) {
    let store = b.store().await;
    store.case_shared("c0", "ping-1.2").await.unwrap();
    let mut ids: Vec<String> = (0..1_200).map(|i| format!("c{i}")).collect();
    ids.push("c5".into());
    store.cases_shared(&ids, "ping-2.1").await.unwrap();
    let shared = store.shared_cases().await.unwrap();
    assert_eq!(shared.len(), 1_200);
    assert!(shared.iter().all(|(_, raised)| !raised));
    // Each is watched: a loss raises its alert.
    let alert = store
        .consent_lost("c1199", "ping-2.1", "r1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alert.case_id, "c1199");
}

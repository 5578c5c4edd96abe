//! The audit chain: appends, tampering found by verification, retention,
//! and appenders in several connections (processes, replicas).

use std::sync::Arc;

use bridge_store::audit::{AuditEvent, ConsentBasis, ProblemKind, GENESIS_HASH};
use bridge_store::{AuditEntry, AuditFilter, AuditProblem, OpenMode, Store, StoreError};

use crate::Backend;

fn entry(i: usize, at: &str) -> AuditEntry {
    AuditEntry {
        at: at.to_string(),
        flow: if i.is_multiple_of(2) {
            "ping-1.1"
        } else {
            "ping-2.1"
        }
        .into(),
        run_id: format!("run-{}", i / 10),
        event: "delivered".into(),
        source_id: format!("intervention-{i}"),
        target_id: Some(format!("target-{i}")),
        case_id: (!i.is_multiple_of(3)).then(|| format!("case-{}", i % 4)),
        permitted_by: Some("cw_amal".into()),
        consent: "recorded".into(),
        job: "ping-1.1".into(),
        job_version: "1.2.0".into(),
        job_hash: "ab".repeat(32),
        mappings_hash: "cd".repeat(32),
    }
}

/// Entries one minute apart from 2026-01-01T00:00.
fn day_entries(n: usize) -> Vec<AuditEntry> {
    (0..n)
        .map(|i| {
            entry(
                i,
                &format!("2026-01-01T{:02}:{:02}:00.000Z", i / 60, i % 60),
            )
        })
        .collect()
}

async fn filled(b: &Backend, n: usize) -> Arc<dyn Store> {
    let s = b.store().await;
    s.audit_append(&day_entries(n)).await.unwrap();
    s
}

async fn problem(s: &dyn Store) -> AuditProblem {
    let v = s.audit_verify().await.unwrap();
    v.problem
        .clone()
        .unwrap_or_else(|| panic!("tampering not detected: {v:?}"))
}

pub async fn appended_entries_verify_and_the_chain_continues_after_a_reopen(b: Backend) {
    {
        let s = b.store().await;
        let v = s.audit_verify().await.unwrap();
        assert!(v.ok() && v.checked == 0 && v.head_seq == 0 && v.head_hash == GENESIS_HASH);
        s.audit_append(&day_entries(3)).await.unwrap();
        s.audit_append(&[]).await.unwrap();
    }
    let s = b.open(OpenMode::Existing).await.unwrap();
    s.audit_append(&day_entries(2)).await.unwrap();
    let v = s.audit_verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.checked, v.head_seq), (5, 5));
    let all = s.audit_list(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(v.head_hash, all[4].hash);
    assert_eq!(all[3].entry, day_entries(1)[0]);
    for r in &all {
        assert_eq!(r.hash, r.expected_hash());
    }
}

pub async fn the_triggers_refuse_updates_and_deletes(b: Backend) {
    let s = filled(&b, 3).await;
    for sql in [
        "UPDATE audit SET source_id = 'x' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
        "DELETE FROM audit",
        "UPDATE audit_head SET seq = 1 WHERE id = 1",
        "DELETE FROM audit_head",
    ] {
        let e = b.exec(sql).await.unwrap_err();
        assert!(e.contains("audit"), "{sql}: {e}");
    }
    if b.is_postgres() {
        // TRUNCATE skips row triggers: refused by its own.
        for sql in ["TRUNCATE audit", "TRUNCATE audit_head"] {
            let e = b.exec(sql).await.unwrap_err();
            assert!(e.contains("audit"), "{sql}: {e}");
        }
    }
    assert!(s.audit_verify().await.unwrap().ok());
    assert_eq!(s.audit_verify().await.unwrap().checked, 3);
}

pub async fn a_changed_field_is_named_by_its_seq(b: Backend) {
    let s = filled(&b, 6).await;
    b.tamper("UPDATE audit SET permitted_by = 'someone_else' WHERE seq = 4")
        .await;
    let p = problem(&*s).await;
    assert_eq!((p.seq, p.kind), (4, ProblemKind::Changed), "{p}");
    // A cleared optional field too.
    b.tamper("UPDATE audit SET permitted_by = 'cw_amal' WHERE seq = 4")
        .await;
    assert!(s.audit_verify().await.unwrap().ok());
    b.tamper("UPDATE audit SET case_id = NULL WHERE seq = 2")
        .await;
    assert_eq!(problem(&*s).await.seq, 2);
}

pub async fn a_changed_and_rehashed_entry_breaks_the_next_link(b: Backend) {
    let s = filled(&b, 5).await;
    let mut rows = s.audit_list(&AuditFilter::default()).await.unwrap();
    let r = &mut rows[2];
    r.entry.consent = "overridden".into();
    let rehashed = r.expected_hash();
    b.tamper(&format!(
        "UPDATE audit SET consent = 'overridden', hash = '{rehashed}' WHERE seq = 3"
    ))
    .await;
    let p = problem(&*s).await;
    assert_eq!((p.seq, p.kind), (3, ProblemKind::Changed), "{p}");
}

pub async fn a_removed_entry_in_the_middle_is_detected(b: Backend) {
    let s = filled(&b, 5).await;
    b.tamper("DELETE FROM audit WHERE seq = 3").await;
    let p = problem(&*s).await;
    assert_eq!((p.seq, p.kind), (3, ProblemKind::Removed), "{p}");
}

pub async fn a_removed_last_entry_is_detected_through_the_head(b: Backend) {
    let s = filled(&b, 5).await;
    b.tamper("DELETE FROM audit WHERE seq = 5").await;
    let p = problem(&*s).await;
    assert_eq!((p.seq, p.kind), (5, ProblemKind::Removed), "{p}");
    // Every entry removed.
    b.tamper("DELETE FROM audit").await;
    assert_eq!(problem(&*s).await.seq, 1);
}

pub async fn swapped_entries_are_reported_as_reordered(b: Backend) {
    let s = filled(&b, 4).await;
    // Swap the whole rows 2 and 3 (content and hashes), keeping the seqs.
    b.tamper("UPDATE audit SET seq = -2 WHERE seq = 2").await;
    b.tamper("UPDATE audit SET seq = 2 WHERE seq = 3").await;
    b.tamper("UPDATE audit SET seq = 3 WHERE seq = -2").await;
    let p = problem(&*s).await;
    assert_eq!((p.seq, p.kind), (2, ProblemKind::Reordered), "{p}");
}

pub async fn pruning_keeps_the_rest_verifiable_and_records_the_anchor(b: Backend) {
    let s = filled(&b, 10).await;
    let all = s.audit_list(&AuditFilter::default()).await.unwrap();
    // Entries 1..=4 are before 00:04.
    let removed = s.audit_prune("2026-01-01T00:04:00Z").await.unwrap();
    assert_eq!(removed, 4);
    let v = s.audit_verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.checked, v.head_seq), (6, 10));
    assert_eq!(
        (v.anchor.seq, v.anchor.hash.as_str()),
        (4, all[3].hash.as_str())
    );
    assert_eq!(v.anchor.before.as_deref(), Some("2026-01-01T00:04:00.000Z"));
    assert!(v.anchor.at.is_some());
    // Nothing older left: a second prune removes nothing.
    assert_eq!(s.audit_prune("2026-01-01T00:04:00Z").await.unwrap(), 0);
    // Appends continue after a prune.
    s.audit_append(&day_entries(1)).await.unwrap();
    assert!(s.audit_verify().await.unwrap().ok());
    // A prune of everything leaves a verifiable empty trail.
    assert_eq!(s.audit_prune("2027-01-01T00:00:00Z").await.unwrap(), 7);
    let v = s.audit_verify().await.unwrap();
    assert!(v.ok() && v.checked == 0 && v.anchor.seq == 11, "{v:?}");
    // ... and a removed first remaining entry is still detected.
    s.audit_append(&day_entries(10)).await.unwrap();
    s.audit_prune("2026-01-01T00:04:00Z").await.unwrap();
    b.tamper("DELETE FROM audit WHERE seq = 16").await;
    assert_eq!(problem(&*s).await.seq, 16);
}

pub async fn prune_removes_only_an_unbroken_run_of_old_entries(b: Backend) {
    let s = b.store().await;
    // Appended out of time order (two processes): 00:00, 00:09, 00:01.
    let times = ["00:00", "00:09", "00:01"];
    let entries: Vec<AuditEntry> = times
        .iter()
        .enumerate()
        .map(|(i, t)| entry(i, &format!("2026-01-01T{t}:00.000Z")))
        .collect();
    s.audit_append(&entries).await.unwrap();
    assert_eq!(s.audit_prune("2026-01-01T00:05:00Z").await.unwrap(), 1);
    assert!(s.audit_verify().await.unwrap().ok());
}

pub async fn prune_is_refused_while_the_chain_is_broken(b: Backend) {
    let s = filled(&b, 5).await;
    b.tamper("UPDATE audit SET flow = 'x' WHERE seq = 2").await;
    let e = s.audit_prune("2027-01-01T00:00:00Z").await.unwrap_err();
    assert!(e.to_string().contains("entry 2 changed"), "{e}");
    assert_eq!(
        s.audit_list(&AuditFilter::default()).await.unwrap().len(),
        5
    );
    assert!(s.audit_prune("last tuesday").await.is_err());
}

/// Four stores on one database (four pools, as four processes or replicas
/// would have), appending at once: one chain, nothing lost or forked.
pub async fn appenders_in_several_connections_keep_one_chain(b: Backend) {
    let mut stores = vec![b.store().await];
    for _ in 1..4 {
        stores.push(b.open(OpenMode::Existing).await.unwrap());
    }
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(tag, s)| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let batch: Vec<AuditEntry> = day_entries(2)
                        .into_iter()
                        .map(|mut e| {
                            e.source_id = format!("{tag}-{i}");
                            e
                        })
                        .collect();
                    s.audit_append(&batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let v = stores[0].audit_verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.checked, v.head_seq), (160, 160));
    let all = stores[3].audit_list(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 160);
    for tag in 0..4 {
        let mine = all
            .iter()
            .filter(|r| r.entry.source_id.starts_with(&format!("{tag}-")))
            .count();
        assert_eq!(mine, 40, "appender {tag}");
    }
    // Each batch of two stayed together.
    for pair in all.chunks(2) {
        assert_eq!(pair[0].entry.source_id, pair[1].entry.source_id);
    }
}

pub async fn unknown_codes_and_bad_values_are_refused_and_nothing_is_stored(b: Backend) {
    let s = filled(&b, 1).await;
    let good = entry(7, "2026-02-01T00:00:00.000Z");
    type Spoil = Box<dyn Fn(&mut AuditEntry)>;
    let bad: Vec<(&str, Spoil)> = vec![
        ("event", Box::new(|e| e.event = "shared".into())),
        ("consent", Box::new(|e| e.consent = "implied".into())),
        ("at", Box::new(|e| e.at = "2026-02-01T00:00:00Z".into())),
        ("at", Box::new(|e| e.at = "yesterday".into())),
        ("source_id", Box::new(|e| e.source_id = String::new())),
        ("case_id", Box::new(|e| e.case_id = Some(String::new()))),
        (
            "permitted_by",
            Box::new(|e| e.permitted_by = Some("a\nb".into())),
        ),
        (
            "target_id",
            Box::new(|e| e.target_id = Some("x".repeat(300))),
        ),
    ];
    for (field, spoil) in bad {
        let mut e = good.clone();
        spoil(&mut e);
        // The good one first: the batch is refused as a whole.
        let err = s.audit_append(&[good.clone(), e]).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert!(!err.to_string().contains("xxxx"), "{err}");
    }
    // The database refuses unknown codes written around the store too.
    let e = b
        .exec(
            "INSERT INTO audit (seq, at, flow, run_id, event, source_id, consent, job, job_version,
               job_hash, mappings_hash, prev_hash, hash)
             VALUES (9, 'x', 'f', 'r', 'shared', 's', 'recorded', 'j', 'v', 'h', 'm', 'p', 'h')",
        )
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("check"), "{e}");
    let v = s.audit_verify().await.unwrap();
    assert!(v.ok() && v.checked == 1, "{v:?}");
    assert!(AuditEvent::parse("consent-revoked").is_some());
    assert_eq!(ConsentBasis::NotTransmitted.as_str(), "not-transmitted");
}

pub async fn list_filters_by_time_flow_and_case(b: Backend) {
    let s = filled(&b, 12).await;
    let list = |f: AuditFilter| {
        let s = s.clone();
        async move {
            s.audit_list(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(AuditFilter {
            from: Some("2026-01-01T00:02:00Z".into()),
            to: Some("2026-01-01T01:05:00+01:00".into()),
            ..Default::default()
        })
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        list(AuditFilter {
            flow: Some("ping-2.1".into()),
            limit: Some(2),
            ..Default::default()
        })
        .await,
        [2, 4]
    );
    assert_eq!(
        list(AuditFilter {
            case_id: Some("case-1".into()),
            newest_first: true,
            ..Default::default()
        })
        .await,
        [6, 2]
    );
    assert_eq!(
        list(AuditFilter {
            seq: Some(7),
            ..Default::default()
        })
        .await,
        [7]
    );
    assert_eq!(
        list(AuditFilter {
            limit: Some(0),
            ..Default::default()
        })
        .await,
        Vec::<i64>::new()
    );
    let e = s
        .audit_list(&AuditFilter {
            from: Some("01/01/2026".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("from"), "{e}");
}

/// A run's worth of entries in one append (several statements on
/// PostgreSQL): all or none, one chain.
pub async fn a_large_batch_is_appended_whole(b: Backend) {
    let s = b.store().await;
    let entries: Vec<AuditEntry> = (0..2500)
        .map(|i| {
            let mut e = entry(i, "2026-01-01T00:00:00.000Z");
            e.source_id = format!("iv-{i}");
            e
        })
        .collect();
    s.audit_append(&entries).await.unwrap();
    let v = s.audit_verify().await.unwrap();
    assert!(v.ok() && v.checked == 2500, "{v:?}");
    // A bad entry at the end refuses the whole batch.
    let mut more = entries.clone();
    more[2499].event = "shared".into();
    assert!(s.audit_append(&more).await.is_err());
    assert_eq!(s.audit_verify().await.unwrap().head_seq, 2500);
}

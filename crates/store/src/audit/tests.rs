use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;
use crate::{OpenMode, SqliteStore, Store};

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

async fn store_at(path: &Path) -> SqliteStore {
    SqliteStore::open(path, OpenMode::Init).await.unwrap()
}

async fn filled(n: usize) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = store_at(&dir.path().join("state.db")).await;
    s.audit_append(&day_entries(n)).await.unwrap();
    (dir, s)
}

/// Raw SQL as someone editing the database by hand would run it, with the
/// append-only triggers dropped first.
async fn tamper(s: &SqliteStore, sql: &str) {
    for t in ["audit_no_update", "audit_no_delete", "audit_head_forward"] {
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {t}"))
            .execute(s.pool())
            .await
            .unwrap();
    }
    sqlx::query(sql).execute(s.pool()).await.unwrap();
}

async fn problem(s: &SqliteStore) -> AuditProblem {
    let v = s.audit_verify().await.unwrap();
    v.problem
        .clone()
        .unwrap_or_else(|| panic!("tampering not detected: {v:?}"))
}

#[test]
fn the_hash_is_the_documented_text() {
    let e = entry(1, "2026-01-01T00:00:00.000Z");
    let text = format!(
        "bridge-audit-v1\nat=2026-01-01T00:00:00.000Z\nflow=ping-2.1\nrun_id=run-0\nevent=delivered\n\
         source_id=intervention-1\ntarget_id=target-1\ncase_id=case-1\npermitted_by=cw_amal\n\
         consent=recorded\njob=ping-1.1\njob_version=1.2.0\njob_hash={}\nmappings_hash={}\n\
         prev_hash={GENESIS_HASH}\n",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    assert_eq!(
        entry_hash(&e, GENESIS_HASH),
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    // An absent value is an empty line value.
    let mut none = e.clone();
    none.case_id = None;
    let text = text.replace("case_id=case-1\n", "case_id=\n");
    assert_eq!(
        entry_hash(&none, GENESIS_HASH),
        hex::encode(Sha256::digest(text.as_bytes()))
    );
}

#[tokio::test]
async fn appended_entries_verify_and_the_chain_continues_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = store_at(&path).await;
        let v = s.audit_verify().await.unwrap();
        assert!(v.ok() && v.checked == 0 && v.head_seq == 0 && v.head_hash == GENESIS_HASH);
        s.audit_append(&day_entries(3)).await.unwrap();
        s.audit_append(&[]).await.unwrap();
    }
    let s = store_at(&path).await;
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
}

#[tokio::test]
async fn the_triggers_refuse_updates_and_deletes() {
    let (_dir, s) = filled(3).await;
    for sql in [
        "UPDATE audit SET source_id = 'x' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
        "UPDATE audit_head SET seq = 1 WHERE id = 1",
        "DELETE FROM audit_head",
    ] {
        let e = sqlx::query(sql).execute(s.pool()).await.unwrap_err();
        assert!(e.to_string().contains("audit"), "{sql}: {e}");
    }
    assert!(s.audit_verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_changed_field_is_named_by_its_seq() {
    let (_dir, s) = filled(6).await;
    tamper(
        &s,
        "UPDATE audit SET permitted_by = 'someone_else' WHERE seq = 4",
    )
    .await;
    let p = problem(&s).await;
    assert_eq!((p.seq, p.kind), (4, ProblemKind::Changed), "{p}");

    // A cleared optional field too.
    let (_dir, s) = filled(6).await;
    tamper(&s, "UPDATE audit SET case_id = NULL WHERE seq = 2").await;
    assert_eq!(problem(&s).await.seq, 2);
}

#[tokio::test]
async fn a_changed_and_rehashed_entry_breaks_the_next_link() {
    let (_dir, s) = filled(5).await;
    let mut rows = s.audit_list(&AuditFilter::default()).await.unwrap();
    let r = &mut rows[2];
    r.entry.consent = "overridden".into();
    let rehashed = r.expected_hash();
    tamper(
        &s,
        &format!("UPDATE audit SET consent = 'overridden', hash = '{rehashed}' WHERE seq = 3"),
    )
    .await;
    let p = problem(&s).await;
    assert_eq!((p.seq, p.kind), (3, ProblemKind::Changed), "{p}");
}

#[tokio::test]
async fn a_removed_entry_in_the_middle_is_detected() {
    let (_dir, s) = filled(5).await;
    tamper(&s, "DELETE FROM audit WHERE seq = 3").await;
    let p = problem(&s).await;
    assert_eq!((p.seq, p.kind), (3, ProblemKind::Removed), "{p}");
}

#[tokio::test]
async fn a_removed_last_entry_is_detected_through_the_head() {
    let (_dir, s) = filled(5).await;
    tamper(&s, "DELETE FROM audit WHERE seq = 5").await;
    let p = problem(&s).await;
    assert_eq!((p.seq, p.kind), (5, ProblemKind::Removed), "{p}");
    // Every entry removed.
    tamper(&s, "DELETE FROM audit").await;
    assert_eq!(problem(&s).await.seq, 1);
}

#[tokio::test]
async fn swapped_entries_are_reported_as_reordered() {
    let (_dir, s) = filled(4).await;
    // Swap the whole rows 2 and 3 (content and hashes), keeping the seqs.
    tamper(&s, "UPDATE audit SET seq = -2 WHERE seq = 2").await;
    tamper(&s, "UPDATE audit SET seq = 2 WHERE seq = 3").await;
    tamper(&s, "UPDATE audit SET seq = 3 WHERE seq = -2").await;
    let p = problem(&s).await;
    assert_eq!((p.seq, p.kind), (2, ProblemKind::Reordered), "{p}");
}

#[tokio::test]
async fn pruning_keeps_the_rest_verifiable_and_records_the_anchor() {
    let (_dir, s) = filled(10).await;
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
    let (_dir, s) = filled(10).await;
    s.audit_prune("2026-01-01T00:04:00Z").await.unwrap();
    tamper(&s, "DELETE FROM audit WHERE seq = 5").await;
    assert_eq!(problem(&s).await.seq, 5);
}

#[tokio::test]
async fn prune_removes_only_an_unbroken_run_of_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_at(&dir.path().join("state.db")).await;
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

#[tokio::test]
async fn prune_is_refused_while_the_chain_is_broken() {
    let (_dir, s) = filled(5).await;
    tamper(&s, "UPDATE audit SET flow = 'x' WHERE seq = 2").await;
    let e = s.audit_prune("2027-01-01T00:00:00Z").await.unwrap_err();
    assert!(e.to_string().contains("entry 2 changed"), "{e}");
    assert_eq!(
        s.audit_list(&AuditFilter::default()).await.unwrap().len(),
        5
    );
    assert!(s.audit_prune("last tuesday").await.is_err());
}

#[tokio::test]
async fn two_appenders_in_two_connections_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // Two stores on one file: two pools, as two processes would have.
    let a = store_at(&path).await;
    let b = SqliteStore::open(&path, OpenMode::Existing).await.unwrap();
    let run = |s: SqliteStore, tag: usize| async move {
        for i in 0..25 {
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
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(run(a.clone(), 1)),
        tokio::spawn(run(b.clone(), 2))
    );
    ra.unwrap();
    rb.unwrap();
    let v = a.audit_verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.checked, v.head_seq), (100, 100));
    let all = b.audit_list(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 100);
    assert!(all.iter().any(|r| r.entry.source_id.starts_with("1-")));
    assert!(all.iter().any(|r| r.entry.source_id.starts_with("2-")));
}

#[tokio::test]
async fn unknown_codes_and_bad_values_are_refused_and_nothing_is_stored() {
    let (_dir, s) = filled(1).await;
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
    let e = sqlx::query(
        "INSERT INTO audit (seq, at, flow, run_id, event, source_id, consent, job, job_version,
           job_hash, mappings_hash, prev_hash, hash)
         VALUES (9, 'x', 'f', 'r', 'shared', 's', 'recorded', 'j', 'v', 'h', 'm', 'p', 'h')",
    )
    .execute(s.pool())
    .await
    .unwrap_err();
    assert!(e.to_string().contains("CHECK"), "{e}");
    let v = s.audit_verify().await.unwrap();
    assert!(v.ok() && v.checked == 1, "{v:?}");
    // Through the monitored wrapper: refused, and the store is not marked failing.
    let m = crate::Monitored::new(s.clone());
    let mut e = good.clone();
    e.event = "shared".into();
    assert!(m.audit_append(&[e]).await.is_err());
    assert_eq!(m.fault(), None);
    assert!(AuditEvent::parse("consent-revoked").is_some());
    assert_eq!(ConsentBasis::NotTransmitted.as_str(), "not-transmitted");
}

#[tokio::test]
async fn list_filters_by_time_flow_and_case() {
    let (_dir, s) = filled(12).await;
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
    let e = s
        .audit_list(&AuditFilter {
            from: Some("01/01/2026".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("from"), "{e}");
}

#[test]
fn a_record_serializes_flat() {
    let r = AuditRecord {
        seq: 1,
        entry: entry(1, "2026-01-01T00:00:00.000Z"),
        prev_hash: GENESIS_HASH.into(),
        hash: "h".into(),
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["flow"], "ping-2.1");
    assert_eq!(v["case_id"], "case-1");
    let back: AuditRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

//! The hash encoding and the serialized form. What the stores do with the
//! chain is the contract suite's (tests/contract/audit.rs), on both backends.

use sha2::{Digest, Sha256};

use super::*;

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

//! The audit trail through the real `bridge` binary (issue 16 part 3):
//! `bridge audit verify | list | export | prune` on a state database filled
//! through the store API. The exports are checked against the encoding the
//! auditor's page documents, implemented here again, so an export can be
//! verified without the bridge; tampering with the database makes `verify`
//! fail naming the entry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bridge_store::{AuditEntry, OpenMode, SqliteStore, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Deployment {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
}

fn deployment() -> Deployment {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        "[state]\npath = \"state.db\"\n[primero]\nbase_url = \"http://127.0.0.1:1\"\n\
         user_name = \"bridge_api\"\npassword = { env = \"BRIDGE_PRIMERO_PASSWORD\" }\n\
         [jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n",
    )
    .unwrap();
    Deployment {
        state: tmp.path().join("state.db"),
        config,
        _tmp: tmp,
    }
}

fn entry(i: usize) -> AuditEntry {
    let (flow, event, consent) = match i % 3 {
        0 => ("ping-1.1", "delivered", "not-transmitted"),
        1 => ("ping-2.1", "delivered", "recorded"),
        _ => ("ping-2.1", "refused-no-consent", "absent"),
    };
    AuditEntry {
        at: format!("2026-03-0{}T10:00:00.000Z", i + 1),
        flow: flow.into(),
        run_id: format!("run-{i}"),
        event: event.into(),
        source_id: format!("src-{i}"),
        target_id: (event == "delivered").then(|| format!("tgt-{i}")),
        case_id: Some(format!("case-{}", i % 2)),
        // A comma: the CSV must quote it.
        permitted_by: Some(if i == 4 { "cw,amal" } else { "cw_amal" }.into()),
        consent: consent.into(),
        job: flow.into(),
        job_version: "1.0.0".into(),
        job_hash: "ab".repeat(32),
        mappings_hash: "cd".repeat(32),
    }
}

async fn fill(state: &Path, n: usize) {
    let store = SqliteStore::open(state, OpenMode::Init).await.unwrap();
    let entries: Vec<AuditEntry> = (0..n).map(entry).collect();
    store.audit_append(&entries[..2]).await.unwrap();
    store.audit_append(&entries[2..]).await.unwrap();
}

async fn bridge(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command.args(args).current_dir(std::env::temp_dir());
    bridge_testkit::cli::output_off_runtime(command).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The documented hash (docs/auditor/audit-trail.md), from an exported row.
fn documented_hash(field: impl Fn(&str) -> String) -> String {
    let mut text = String::from("bridge-audit-v1\n");
    for name in [
        "at",
        "flow",
        "run_id",
        "event",
        "source_id",
        "target_id",
        "case_id",
        "permitted_by",
        "consent",
        "job",
        "job_version",
        "job_hash",
        "mappings_hash",
        "prev_hash",
    ] {
        text.push_str(&format!("{name}={}\n", field(name)));
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Links and hashes of an exported chain; returns the last hash.
fn check_chain(rows: &[(i64, String, String, String)], first_prev: &str) -> String {
    let mut prev = first_prev.to_string();
    for (seq, prev_hash, hash, expected) in rows {
        assert_eq!(prev_hash, &prev, "entry {seq} does not link");
        assert_eq!(
            hash, expected,
            "entry {seq}: hash is not the documented one"
        );
        prev = hash.clone();
    }
    prev
}

async fn tamper(state: &Path, sql: &str) {
    let store = SqliteStore::open(state, OpenMode::Existing).await.unwrap();
    for t in ["audit_no_update", "audit_no_delete", "audit_head_forward"] {
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {t}"))
            .execute(store.pool())
            .await
            .unwrap();
    }
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_list_and_export_on_a_filled_trail_and_verify_fails_once_tampered() {
    let d = deployment();
    let config = d.config.to_str().unwrap();
    fill(&d.state, 6).await;

    // verify: intact, with the head to note down.
    let out = bridge(&["audit", "verify", "--config", config]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("intact: 6 entr"), "{text}");
    let head = text
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    assert!(head.starts_with("6:"), "{head}");
    assert!(text.contains("nothing pruned"), "{text}");

    // list: a table, filtered by flow and case, newest first.
    let out = bridge(&[
        "audit", "list", "--config", config, "--flow", "ping-2.1", "--case", "case-0",
    ])
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let seqs: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // ping-2.1 is i % 3 != 0; case-0 is i even: i = 2, 4 (seq 3, 5).
    assert_eq!(seqs, ["5", "3"], "{text}");
    assert!(
        text.contains("refused-no-consent") && text.contains("absent"),
        "{text}"
    );

    // export jsonl: every entry, its hash recomputed from the documented text.
    let out = bridge(&["audit", "export", "--config", config, "--format", "jsonl"]).await;
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    let chain: Vec<(i64, String, String, String)> = rows
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                r["seq"].as_i64().unwrap(),
                field("prev_hash"),
                field("hash"),
                documented_hash(field),
            )
        })
        .collect();
    let last = check_chain(&chain, &"0".repeat(64));
    assert_eq!(head, format!("6:{last}"));
    assert_eq!(rows[2]["target_id"], Value::Null);
    assert_eq!(rows[1]["consent"], "recorded");

    // export csv to a file: header, quoting, the same hashes.
    let file = d.state.with_file_name("audit.csv");
    let out = bridge(&[
        "audit",
        "export",
        "--config",
        config,
        "--format",
        "csv",
        "--from",
        "2026-03-02T00:00:00Z",
        "--out",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&file).unwrap();
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), 16);
    assert_eq!(
        (header[0], header[14], header[15]),
        ("seq", "prev_hash", "hash")
    );
    let mut chain = Vec::new();
    for line in lines {
        let cells = split_csv(line);
        assert_eq!(cells.len(), 16, "{line}");
        let field = |k: &str| cells[header.iter().position(|h| *h == k).unwrap()].clone();
        chain.push((
            field("seq").parse().unwrap(),
            field("prev_hash"),
            field("hash"),
            documented_hash(field),
        ));
    }
    // Entries 2..6: a time range is a contiguous piece of the chain, tied
    // to the entry before it.
    assert_eq!(chain.len(), 5);
    assert_eq!(chain[0].0, 2);
    assert!(csv.contains("\"cw,amal\""), "{csv}");
    check_chain(&chain, rows[0]["hash"].as_str().unwrap());

    // The head noted down is still held.
    let out = bridge(&["audit", "verify", "--config", config, "--head", &head]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Tampered: a changed field is named by its entry; exit 1.
    tamper(
        &d.state,
        "UPDATE audit SET permitted_by = 'other' WHERE seq = 3",
    )
    .await;
    let out = bridge(&["audit", "verify", "--config", config, "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["verification"]["problem"]["seq"], 3);
    assert_eq!(v["verification"]["problem"]["kind"], "changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_entries_and_a_rewritten_head_are_caught_and_prune_keeps_the_chain() {
    let d = deployment();
    let config = d.config.to_str().unwrap();
    fill(&d.state, 6).await;
    let out = bridge(&["audit", "verify", "--config", config]).await;
    let noted = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("head: ").map(str::to_string))
        .unwrap();

    // Prune by hand: what is left verifies and links to the anchor.
    let out = bridge(&[
        "audit",
        "prune",
        "--config",
        config,
        "--before",
        "2026-03-03T00:00:00Z",
    ])
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("removed 2 entr") && text.contains("anchor: entry 2"),
        "{text}"
    );
    let out = bridge(&["audit", "verify", "--config", config, "--head", &noted]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("intact: 4 entr") && text.contains("pruned before 2026-03-03T00:00:00.000Z"),
        "{text}"
    );

    // The last entry removed: named, although every remaining link holds.
    tamper(&d.state, "DELETE FROM audit WHERE seq = 6").await;
    let out = bridge(&["audit", "verify", "--config", config]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("entry 6 removed"), "{text}");

    // Even with the head row rewritten to match, the noted head catches it.
    tamper(
        &d.state,
        "UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit WHERE seq = 5)",
    )
    .await;
    let out = bridge(&["audit", "verify", "--config", config]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = bridge(&["audit", "verify", "--config", config, "--head", &noted]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("entry 6 removed"), "{text}");

    // A middle entry removed.
    tamper(&d.state, "DELETE FROM audit WHERE seq = 4").await;
    let out = bridge(&["audit", "verify", "--config", config]).await;
    assert!(stdout(&out).contains("entry 4 removed"), "{}", stdout(&out));
}

/// One CSV line (RFC 4180 quoting, no line breaks inside cells).
fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

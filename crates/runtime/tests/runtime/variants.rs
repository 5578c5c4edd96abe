//! A country's variant of a job: the catalog serves a flow with the job
//! `deployment.toml` names under `[jobs]`, and no other; wrong entries are
//! refused naming the file, the line and the key; hot reload keeps working.

use std::path::{Path, PathBuf};

use bridge_runtime::reload::{recording_versions, Catalog, ReloadEvent};
use bridge_runtime::{content_hash, JobOutcome};
use bridge_testkit::wat::named_job_wat;

use super::{ctx, runtime_in, write_changed};
use bridge_runtime::Limits;

fn job(name: &str, flow: &str, version: u32) -> Vec<u8> {
    wat::parse_str(named_job_wat(name, flow, version, "", &["services"])).expect("valid WAT")
}

/// A jobs folder: PING 1.1's own job (emits v1), two variants of it (v2,
/// v3), PING 1.2's job (v4), and a DTP job needing a table Testland lacks.
fn jobs_folder(root: &Path) -> Vec<PathBuf> {
    let dir = root.join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let dtp = wat::parse_str(named_job_wat(
        "dtp-1.1",
        "dtp-1.1",
        9,
        "",
        &["no-such-table"],
    ))
    .unwrap();
    let files = [
        ("ping-1.1", job("ping-1.1", "ping-1.1", 1)),
        ("ping-1.1-kakuma", job("ping-1.1-kakuma", "ping-1.1", 2)),
        ("ping-1.1-other", job("ping-1.1-other", "ping-1.1", 3)),
        ("ping-1.2", job("ping-1.2", "ping-1.2", 4)),
        ("dtp-1.1", dtp),
    ];
    files
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(format!("{name}.wasm"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

/// Testland (PING design) with the table the jobs read and `jobs` as its
/// `[jobs]` lines.
fn testland(root: &Path, jobs: &str) -> PathBuf {
    let dir = root.join("testland");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("deployment.toml"),
        format!("[deployment]\ncountry = \"Testland\"\ndesign = \"ping\"\n{jobs}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("services.toml"),
        "description = \"test\"\n[map]\n\"a\" = \"b\"\n",
    )
    .unwrap();
    dir
}

async fn emits(catalog: &Catalog, flow: &str) -> JobOutcome {
    let mut instance = catalog.flow_instance(flow).await.unwrap();
    instance.run(&ctx(), "r", "{}").await.unwrap()
}

fn v(n: u32) -> JobOutcome {
    JobOutcome::Emit(serde_json::json!({ "v": n }))
}

#[tokio::test]
async fn a_deployment_serves_a_flow_with_the_variant_it_names_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let files = jobs_folder(tmp.path());

    let named = testland(tmp.path(), "\n[jobs]\n\"ping-1.1\" = \"ping-1.1-kakuma\"\n");
    let catalog = Catalog::open(rt.clone(), &files, &named).await.unwrap();
    assert_eq!(catalog.job_for("ping-1.1"), "ping-1.1-kakuma");
    assert_eq!(emits(&catalog, "ping-1.1").await, v(2));
    assert_eq!(emits(&catalog, "ping-1.2").await, v(4));
    let served: Vec<&str> = catalog.job_names().collect();
    assert_eq!(served, ["ping-1.1-kakuma", "ping-1.2"]);
    // The run records the variant's component.
    let (_, used) = recording_versions(async {
        catalog.flow_instance("ping-1.1").await.unwrap();
    })
    .await;
    let variant_hash = content_hash(&std::fs::read(&files[1]).unwrap());
    assert_eq!(used.job_hashes, [variant_hash]);

    // Without `[jobs]`: the flow's own job; no variant is served.
    std::fs::remove_dir_all(&named).unwrap();
    let plain = testland(tmp.path(), "");
    let catalog = Catalog::open(rt, &files, &plain).await.unwrap();
    assert_eq!(emits(&catalog, "ping-1.1").await, v(1));
    let served: Vec<&str> = catalog.job_names().collect();
    assert_eq!(served, ["ping-1.1", "ping-1.2"]);
}

#[tokio::test]
async fn a_jobs_entry_naming_a_job_not_built_or_of_another_flow_is_refused_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let files = jobs_folder(tmp.path());
    for (job, says) in [
        (
            "ping-1.1-kakuma2",
            "job `ping-1.1-kakuma2` is not built: no ping-1.1-kakuma2.wasm in",
        ),
        (
            "ping-1.2",
            "job `ping-1.2` serves flow `ping-1.2`, not `ping-1.1`",
        ),
    ] {
        let dir = testland(tmp.path(), &format!("\n[jobs]\n\"ping-1.1\" = \"{job}\"\n"));
        let e = match Catalog::open(rt.clone(), &files, &dir).await {
            Ok(_) => panic!("{job}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("deployment.toml:6: key `jobs.\"ping-1.1\"`") && e.contains(says),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn hot_reload_swaps_a_new_variant_version_and_refuses_a_change_of_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let files = jobs_folder(tmp.path());
    let dir = testland(tmp.path(), "\n[jobs]\n\"ping-1.1\" = \"ping-1.1-kakuma\"\n");
    let catalog = Catalog::open(rt, &files, &dir).await.unwrap();

    write_changed(&files[1], &job("ping-1.1-kakuma", "ping-1.1", 5));
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::JobSwapped { job, .. }] if job == "ping-1.1-kakuma"),
        "{events:?}"
    );
    assert_eq!(emits(&catalog, "ping-1.1").await, v(5));
    // The shared job is not watched here: a new version of it changes nothing.
    write_changed(&files[0], &job("ping-1.1", "ping-1.1", 6));
    assert!(catalog.poll().await.is_empty());

    // Another job for the flow waits for a restart or SIGHUP.
    std::fs::write(
        dir.join("deployment.toml"),
        "[deployment]\ncountry = \"Testland\"\ndesign = \"ping\"\n",
    )
    .unwrap();
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::MappingsRefused { error }] if error.contains("[jobs] changed")),
        "{events:?}"
    );
    assert_eq!(emits(&catalog, "ping-1.1").await, v(5));
}

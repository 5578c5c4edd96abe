//! Runtime tests with tiny components written in WAT (no npm, milliseconds to
//! compile): deny-by-default imports, the time and memory limits, per-record
//! error isolation, precompile cache reuse and hot reload.
//!
//! The components implement the `bridge:job` world by hand through the
//! canonical ABI: the test kit's test job (`test_job_wat`), whose `run` looks
//! at the first byte of the record (`b` traps, `l` loops forever, `m` grows
//! memory without bound, `e` returns a bad-input error, `j` emits invalid
//! JSON; anything else emits `{"v":N}`). A `run-batch` export, when a test adds one, traps (so a batch falls back
//! to one call per record).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_runtime::reload::{Catalog, ReloadEvent};
use bridge_runtime::{
    JobContext, JobFailure, JobInstance, JobOutcome, JobRuntime, Limits, LoadError, RuntimeConfig,
};
use bridge_testkit::wat::test_job_wat as job_wat;

mod pool;
mod variants;

/// `wat` (from [`job_wat`]) with a `run-batch` export (world `batch-job`)
/// that always traps, as a job whose batch call fails would.
fn with_trapping_batch(wat: String) -> String {
    let core = "(core instance $i (instantiate $m))";
    let wat = wat.replacen(
        core,
        &format!(
            "(core module $b (func (export \"run-batch\") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) unreachable))\n  (core instance $bi (instantiate $b))\n  {core}"
        ),
        1,
    );
    let end = wat.rfind(')').expect("component end");
    format!(
        r#"{}
  (func $run-batch (param "ctx" $context) (param "records" (list string)) (result (list (result $outcome (error $job-error))))
    (canon lift (core func $bi "run-batch") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "run-batch" (func $run-batch))
)"#,
        &wat[..end]
    )
}

fn component(version: u32) -> Vec<u8> {
    wat::parse_str(job_wat(version, "", &["services"])).expect("valid WAT")
}

fn runtime_in(dir: &Path, limits: Limits) -> Arc<JobRuntime> {
    Arc::new(
        JobRuntime::new(RuntimeConfig {
            cache_dir: dir.join("cache"),
            limits,
            epoch_tick: Duration::from_millis(5),
        })
        .expect("runtime"),
    )
}

fn ctx() -> JobContext {
    JobContext {
        flow: "test".into(),
        run_id: "run-1".into(),
        today: "2025-06-01".into(),
        dry_run: true,
    }
}

fn mapping_dir(root: &Path, tables: &[&str]) -> std::path::PathBuf {
    let dir = root.join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("deployment.toml"),
        "[deployment]\ncountry = \"Testland\"\ndesign = \"ping\"\n",
    )
    .unwrap();
    for t in tables {
        std::fs::write(
            dir.join(format!("{t}.toml")),
            "description = \"test\"\n[map]\n\"a\" = \"b\"\n",
        )
        .unwrap();
    }
    dir
}

async fn instance(rt: &JobRuntime, version: u32) -> JobInstance {
    let job = rt
        .load_bytes("test-job", &component(version))
        .await
        .expect("load");
    JobInstance::new(Arc::new(job)).await.expect("instantiate")
}

#[tokio::test]
async fn emits_json_and_describes_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let job = rt.load_bytes("test-job", &component(7)).await.unwrap();
    assert_eq!(job.info.name, "test-job");
    assert_eq!(job.info.tables, vec!["services".to_string()]);
    let mut inst = JobInstance::new(Arc::new(job)).await.unwrap();
    let out = inst.run(&ctx(), "r1", "{\"id\":1}").await.unwrap();
    assert_eq!(out, JobOutcome::Emit(serde_json::json!({"v": 7})));
}

#[tokio::test]
async fn refuses_a_component_that_imports_wasi_and_names_the_import() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    for import in [
        "wasi:filesystem/preopens@0.2.0",
        "wasi:sockets/tcp@0.2.0",
        "wasi:http/outgoing-handler@0.2.0",
        "wasi:cli/environment@0.2.0",
    ] {
        let wat = job_wat(1, &format!("(import \"{import}\" (instance))"), &[]);
        let bytes = wat::parse_str(&wat).unwrap();
        let err = rt.load_bytes("hostile", &bytes).await.unwrap_err();
        match &err {
            LoadError::ForbiddenImport {
                job, import: got, ..
            } => {
                assert_eq!(job, "hostile");
                assert_eq!(got, import);
            }
            other => panic!("expected ForbiddenImport for {import}, got {other}"),
        }
        assert!(err.to_string().contains(import), "{err}");
    }
}

#[tokio::test]
async fn refuses_a_component_of_the_wrong_world() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let bytes = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) (i32.const 1)))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (export "describe" (func $f)))"#,
    )
    .unwrap();
    let err = rt.load_bytes("wrong", &bytes).await.unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("configure"), "{err}");
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_deadline_and_the_next_record_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        call_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let rt = runtime_in(tmp.path(), limits);
    let mut inst = instance(&rt, 1).await;
    let started = Instant::now();
    let err = inst.run(&ctx(), "r-loop", "loop").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, JobFailure::Timeout { ref job, .. } if job == "test-job"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(5),
        "deadline not enforced: {took:?}"
    );
    // The instance was discarded; the next record gets a fresh one.
    let out = inst.run(&ctx(), "r-next", "{}").await.unwrap();
    assert_eq!(out, JobOutcome::Emit(serde_json::json!({"v": 1})));
}

#[tokio::test]
async fn memory_bomb_is_stopped_by_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        call_timeout: Duration::from_secs(10),
        memory_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let rt = runtime_in(tmp.path(), limits);
    let mut inst = instance(&rt, 1).await;
    let err = inst.run(&ctx(), "r-mem", "memory").await.unwrap_err();
    assert!(
        matches!(err, JobFailure::MemoryLimit { limit, .. } if limit == 16 * 1024 * 1024),
        "{err}"
    );
    assert!(inst.run(&ctx(), "r-next", "{}").await.is_ok());
}

#[tokio::test]
async fn an_instance_is_replaced_after_its_share_of_records_and_configured_again() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        recycle_after_calls: 3,
        ..Limits::default()
    };
    let rt = runtime_in(tmp.path(), limits);
    let mut inst = instance(&rt, 4).await;
    inst.configure(Arc::new("{}".to_string())).await.unwrap();
    for i in 0..7 {
        let out = inst.run(&ctx(), &format!("r{i}"), "{}").await.unwrap();
        assert_eq!(
            out,
            JobOutcome::Emit(serde_json::json!({"v": 4})),
            "record {i}"
        );
    }
    // Records 1-3 on the first instance, 4-6 on the second, 7 on the third.
    assert_eq!(inst.instances_started(), 3);

    let never = Limits {
        recycle_after_calls: 0,
        ..Limits::default()
    };
    let rt = runtime_in(&tmp.path().join("never"), never);
    let mut inst = instance(&rt, 4).await;
    for i in 0..7 {
        inst.run(&ctx(), &format!("r{i}"), "{}").await.unwrap();
    }
    assert_eq!(inst.instances_started(), 1);
}

#[tokio::test]
async fn trap_and_job_errors_are_per_record() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let mut inst = instance(&rt, 1).await;
    let err = inst.run(&ctx(), "r-b", "boom").await.unwrap_err();
    assert!(matches!(err, JobFailure::Trap { .. }), "{err}");
    assert!(err.to_string().contains("test-job"), "{err}");
    let err = inst.run(&ctx(), "r-e", "error").await.unwrap_err();
    assert_eq!(
        err,
        JobFailure::BadInput {
            job: "test-job".into(),
            field: "record.id".into(),
            reason: "missing".into()
        }
    );
    let err = inst.run(&ctx(), "r-j", "json").await.unwrap_err();
    assert!(matches!(err, JobFailure::InvalidOutput { .. }), "{err}");
    assert!(inst.run(&ctx(), "r-ok", "{}").await.is_ok());
}

/// Records of every kind in one batch: `b` traps, `e` is a job error.
const MIXED_BATCH: &[(&str, &str)] = &[
    ("r1", "{}"),
    ("r-b", "boom"),
    ("r-e", "error"),
    ("r2", "{}"),
];

fn assert_mixed_batch(results: &[Result<JobOutcome, JobFailure>], version: u32) {
    assert_eq!(results.len(), MIXED_BATCH.len());
    let emitted = JobOutcome::Emit(serde_json::json!({ "v": version }));
    assert_eq!(results[0], Ok(emitted.clone()));
    assert!(
        matches!(results[1], Err(JobFailure::Trap { .. })),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(JobFailure::BadInput { .. })),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3], Ok(emitted));
}

#[tokio::test]
async fn a_batch_call_that_traps_is_mapped_again_one_record_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let bytes = wat::parse_str(with_trapping_batch(job_wat(2, "", &["services"]))).unwrap();
    let job = rt.load_bytes("test-job", &bytes).await.unwrap();
    assert!(job.maps_in_batches());
    let mut inst = JobInstance::new(Arc::new(job)).await.unwrap();
    let results = inst.run_batch(&ctx(), MIXED_BATCH).await;
    // Only the record that traps alone fails; the others keep their answers.
    assert_mixed_batch(&results, 2);
    // The first instance went with the batch's trap, the second with `boom`.
    assert_eq!(inst.instances_started(), 3);
}

#[tokio::test]
async fn a_component_without_run_batch_maps_a_batch_one_call_per_record() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let mut inst = instance(&rt, 3).await;
    assert!(!inst.job().maps_in_batches());
    let results = inst.run_batch(&ctx(), MIXED_BATCH).await;
    assert_mixed_batch(&results, 3);
    assert_eq!(inst.instances_started(), 2);
}

#[tokio::test]
async fn second_load_comes_from_the_precompile_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = component(3);
    let first = runtime_in(tmp.path(), Limits::default())
        .load_bytes("test-job", &bytes)
        .await
        .unwrap();
    assert!(!first.from_cache);
    // A new runtime (as a new process would) finds the artifact on disk.
    let second = runtime_in(tmp.path(), Limits::default())
        .load_bytes("test-job", &bytes)
        .await
        .unwrap();
    assert!(second.from_cache);
    let artifacts = std::fs::read_dir(tmp.path().join("cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(artifacts, 1);
}

#[tokio::test]
async fn corrupt_cache_artifact_is_recompiled() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = component(4);
    let rt = runtime_in(tmp.path(), Limits::default());
    rt.load_bytes("test-job", &bytes).await.unwrap();
    for e in std::fs::read_dir(tmp.path().join("cache")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let again = runtime_in(tmp.path(), Limits::default())
        .load_bytes("test-job", &bytes)
        .await
        .unwrap();
    assert!(!again.from_cache);
}

/// Bump the mtime reliably even on coarse-grained filesystems.
fn write_changed(path: &Path, bytes: &[u8]) {
    let before = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
    loop {
        std::fs::write(path, bytes).unwrap();
        let after = std::fs::metadata(path).unwrap().modified().unwrap();
        if Some(after) != before {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn hot_swap_refuses_a_broken_version_and_in_flight_work_keeps_its_version() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let job_file = jobs.join("test-job.wasm");
    std::fs::write(&job_file, component(1)).unwrap();
    let mappings = mapping_dir(tmp.path(), &["services"]);
    let catalog = Catalog::open(rt, std::slice::from_ref(&job_file), &mappings)
        .await
        .unwrap();

    // A run starts on version 1.
    let mut in_flight = catalog.instance("test-job").await.unwrap();

    // A broken build is refused; version 1 keeps serving.
    write_changed(&job_file, b"\0asm broken");
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::JobRefused { job, .. }] if job == "test-job"),
        "{events:?}"
    );
    let mut fresh = catalog.instance("test-job").await.unwrap();
    assert_eq!(
        fresh.run(&ctx(), "r", "{}").await.unwrap(),
        JobOutcome::Emit(serde_json::json!({"v": 1}))
    );

    // A component that would need a missing table is refused too.
    write_changed(
        &job_file,
        &wat::parse_str(job_wat(9, "", &["no-such-table"])).unwrap(),
    );
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::JobRefused { error, .. }] if error.contains("no-such-table")),
        "{events:?}"
    );

    // Version 2 is swapped in atomically.
    write_changed(&job_file, &component(2));
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::JobSwapped { .. }]),
        "{events:?}"
    );
    let mut fresh = catalog.instance("test-job").await.unwrap();
    assert_eq!(
        fresh.run(&ctx(), "r", "{}").await.unwrap(),
        JobOutcome::Emit(serde_json::json!({"v": 2}))
    );
    // The run that began on version 1 finishes on version 1.
    assert_eq!(
        in_flight.run(&ctx(), "r", "{}").await.unwrap(),
        JobOutcome::Emit(serde_json::json!({"v": 1}))
    );

    // No change, no event.
    assert!(catalog.poll().await.is_empty());
}

#[tokio::test]
async fn mapping_change_is_validated_before_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let job_file = tmp.path().join("test-job.wasm");
    std::fs::write(&job_file, component(1)).unwrap();
    let mappings = mapping_dir(tmp.path(), &["services"]);
    let catalog = Catalog::open(rt, std::slice::from_ref(&job_file), &mappings)
        .await
        .unwrap();
    let before = catalog.mappings().content_hash.clone();

    // Removing a table the job needs is refused.
    std::fs::remove_file(mappings.join("services.toml")).unwrap();
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::MappingsRefused { error }] if error.contains("services")),
        "{events:?}"
    );
    assert_eq!(catalog.mappings().content_hash, before);

    // A syntax error is refused with file and line.
    std::fs::write(
        mappings.join("services.toml"),
        "description = \"x\"\n[map\n",
    )
    .unwrap();
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::MappingsRefused { error }] if error.contains("services.toml:2")),
        "{events:?}"
    );

    // A valid edit is swapped in.
    std::fs::write(
        mappings.join("services.toml"),
        "description = \"x\"\n[map]\n\"a\" = \"c\"\n",
    )
    .unwrap();
    let events = catalog.poll().await;
    assert!(
        matches!(&events[..], [ReloadEvent::MappingsSwapped { .. }]),
        "{events:?}"
    );
    assert_eq!(catalog.mappings().tables["services"].get("a"), Some("c"));
}

#[tokio::test]
async fn the_watcher_swaps_in_a_changed_job_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let job_file = tmp.path().join("test-job.wasm");
    std::fs::write(&job_file, component(1)).unwrap();
    let mappings = mapping_dir(tmp.path(), &["services"]);
    let catalog = Arc::new(
        Catalog::open(rt, std::slice::from_ref(&job_file), &mappings)
            .await
            .unwrap(),
    );
    let before = catalog.job("test-job").unwrap().content_hash.clone();
    let watcher = catalog.watch(Duration::from_millis(20));
    write_changed(&job_file, &component(5));
    // Bounded wait for the swap; the watcher runs on its own.
    let mut swapped = false;
    for _ in 0..250 {
        if catalog.job("test-job").unwrap().content_hash != before {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    assert!(swapped, "the watcher did not pick up the new version");
    let mut inst = catalog.instance("test-job").await.unwrap();
    assert_eq!(
        inst.run(&ctx(), "r", "{}").await.unwrap(),
        JobOutcome::Emit(serde_json::json!({"v": 5}))
    );
}

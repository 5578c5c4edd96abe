//! The pool of job instances a run maps its records with (`JobPool`): each
//! record answered as one instance would answer it, in order; a record not
//! held up behind another while an instance is free; records queued while
//! every instance is busy mapped together; every instance of a run on the
//! version the run started with.

use std::sync::Arc;
use std::time::Duration;

use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobFailure, JobOutcome, JobPool, Limits};

use super::{component, ctx, instance, mapping_dir, runtime_in, write_changed};

fn emitted(version: u32) -> JobOutcome {
    JobOutcome::Emit(serde_json::json!({ "v": version }))
}

/// Limits under which a looping record (`loop`) holds its instance for a
/// second before its deadline stops it.
fn slow_limits() -> Limits {
    Limits {
        call_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_window_is_answered_in_order_whatever_instance_mapped_each_part() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), Limits::default());
    let mut first = instance(&rt, 5).await;
    first.configure(Arc::new("{}".into())).await.unwrap();
    let pool = JobPool::with_size(first, ctx(), 3, 8);
    // Errors, a trap and invalid output at known places among emitted records.
    let records = [
        "{}", "error", "{}", "boom", "{}", "json", "{}", "{}", "error", "{}",
    ];
    let items = records
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("r{i}"), r.to_string()))
        .collect();
    let answers = pool.run_batch(items).await;
    assert_eq!(answers.len(), records.len());
    for (record, answer) in records.iter().zip(&answers) {
        match *record {
            "{}" => assert_eq!(answer, &Ok(emitted(5))),
            "error" => assert!(
                matches!(answer, Err(JobFailure::BadInput { .. })),
                "{answer:?}"
            ),
            "boom" => assert!(matches!(answer, Err(JobFailure::Trap { .. })), "{answer:?}"),
            _ => assert!(
                matches!(answer, Err(JobFailure::InvalidOutput { .. })),
                "{answer:?}"
            ),
        }
    }
    assert!(pool.instances() <= 3, "{} instances", pool.instances());
    assert!(pool.run_batch(Vec::new()).await.is_empty());
}

#[tokio::test]
async fn a_record_is_not_held_up_behind_another_while_an_instance_is_free() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), slow_limits());
    let pool = JobPool::with_size(instance(&rt, 1).await, ctx(), 2, 8);
    let slow = pool.run("r-slow", "loop".into());
    let quick = pool.run("r-quick", "{}".into());
    tokio::pin!(slow);
    // `slow` is polled first, so it is queued first and taken by the first
    // worker; `quick` goes to a second instance and is answered while the
    // first still loops.
    tokio::select! {
        biased;
        a = &mut slow => panic!("the looping record was answered before the quick one: {a:?}"),
        answer = quick => assert_eq!(answer, Ok(emitted(1))),
    }
    let err = slow.await.unwrap_err();
    assert!(matches!(err, JobFailure::Timeout { .. }), "{err}");
    assert_eq!(pool.instances(), 2);
}

#[tokio::test]
async fn records_queued_while_every_instance_is_busy_are_mapped_in_one_call() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), slow_limits());
    let pool = JobPool::with_size(instance(&rt, 1).await, ctx(), 1, 8);
    let mut records = vec![("r-slow".to_string(), "loop".to_string())];
    records.extend((0..8).map(|i| (format!("r{i}"), "{}".to_string())));
    // Queued at once; the one instance loops on the first for a second.
    let answers =
        futures::future::join_all(records.iter().map(|(id, r)| pool.run(id, r.clone()))).await;
    assert!(
        matches!(answers[0], Err(JobFailure::Timeout { .. })),
        "{:?}",
        answers[0]
    );
    for answer in &answers[1..] {
        assert_eq!(answer, &Ok(emitted(1)));
    }
    // The looping record, then the eight behind it (or some of them with it).
    assert!(pool.calls() <= 2, "{} calls", pool.calls());
    assert_eq!(pool.instances(), 1);
}

#[tokio::test]
async fn every_instance_of_a_run_is_on_the_version_the_run_started_with() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path(), slow_limits());
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let job_file = jobs.join("test-job.wasm");
    std::fs::write(&job_file, component(1)).unwrap();
    let mappings = mapping_dir(tmp.path(), &["services"]);
    let catalog = Catalog::open(rt, std::slice::from_ref(&job_file), &mappings)
        .await
        .unwrap();
    // A run starts on version 1 with one instance.
    let pool = JobPool::with_size(catalog.instance("test-job").await.unwrap(), ctx(), 2, 8);

    // Version 2 is swapped in while the run goes on.
    write_changed(&job_file, &component(2));
    catalog.poll().await;
    let mut next_run = catalog.instance("test-job").await.unwrap();
    assert_eq!(next_run.run(&ctx(), "r", "{}").await, Ok(emitted(2)));
    assert_ne!(next_run.job().content_hash, pool.job().content_hash);

    // The run's second instance, made now, is still version 1.
    let slow = pool.run("r-slow", "loop".into());
    let quick = pool.run("r-quick", "{}".into());
    tokio::pin!(slow);
    tokio::select! {
        biased;
        a = &mut slow => panic!("the looping record was answered before the quick one: {a:?}"),
        answer = quick => assert_eq!(answer, Ok(emitted(1))),
    }
    assert_eq!(pool.instances(), 2);
    assert!(slow.await.is_err());
}

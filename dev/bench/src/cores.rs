//! The job layer on several cores: a run's pool of job instances
//! (`JobPool`) mapping the same records with 1, 2 and all cores' worth of
//! instances (section 1's scaling table), and the mapping loop the fresh
//! `bridge bench worker map --pool` process runs (section 2).

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::records;
use super::report::{num, Table};
use super::sections::{count, ctx, BATCH, JOBS};
use super::Bench;
use bridge_runtime::{JobFailure, JobInstance, JobOutcome, JobPool, JobRuntime};

type Answer = Result<JobOutcome, JobFailure>;

/// Cores of this machine.
pub fn cores() -> usize {
    bridge_runtime::default_pool_size()
}

/// The pool sizes measured: 1, 2 and all cores (each once).
pub fn pool_sizes() -> Vec<usize> {
    let mut sizes = vec![1, 2, cores()];
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Map `items` with `pool` as a run hands over many records: windows of
/// `per_instance` records for each instance of the pool, the next window
/// queued while one is mapped (so no instance waits for the others), the
/// answers in order.
pub async fn map_in_windows(
    pool: &JobPool,
    items: &[(&str, &str)],
    per_instance: usize,
) -> Vec<Answer> {
    windows(pool, items, per_instance)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// [`map_in_windows`]'s answers a window at a time, in order, for a caller
/// that handles each window's answers and lets them go (as a run does).
pub fn windows<'a>(
    pool: &'a JobPool,
    items: &'a [(&str, &str)],
    per_instance: usize,
) -> impl futures::Stream<Item = Vec<Answer>> + 'a {
    let window = per_instance.max(1) * pool.size();
    let windows = items.chunks(window).map(|w| {
        w.iter()
            .map(|(id, r)| (id.to_string(), r.to_string()))
            .collect::<Vec<_>>()
    });
    stream::iter(windows).map(|w| pool.run_batch(w)).buffered(2)
}

/// One pool size's run over the records.
pub struct PoolRun {
    pub seconds: f64,
    pub instances: u32,
    pub counts: [usize; 3],
    pub answers: Vec<Answer>,
}

impl PoolRun {
    pub fn records_per_sec(&self) -> f64 {
        self.answers.len() as f64 / self.seconds.max(1e-9)
    }

    /// Wall time per record, µs.
    pub fn us_per_record(&self) -> f64 {
        self.seconds * 1e6 / self.answers.len().max(1) as f64
    }
}

/// `records` mapped warm by a pool of `size` instances of `job`, [`BATCH`]
/// records per call: a warm-up (which starts every instance), then the
/// timed run.
pub async fn pool_run(
    job: &Arc<bridge_runtime::LoadedJob>,
    mappings: &Arc<String>,
    records: &[String],
    size: usize,
) -> anyhow::Result<PoolRun> {
    let mut first = JobInstance::new(job.clone()).await?;
    first.configure(mappings.clone()).await?;
    let pool = JobPool::with_size(first, ctx(job), size, BATCH);
    let ids: Vec<String> = (0..records.len()).map(|i| i.to_string()).collect();
    let items: Vec<(&str, &str)> = ids
        .iter()
        .zip(records)
        .map(|(id, r)| (id.as_str(), r.as_str()))
        .collect();
    let warm_up = &items[..items.len().min(200 * size)];
    map_in_windows(&pool, warm_up, BATCH).await;
    let t = Instant::now();
    let answers = map_in_windows(&pool, &items, BATCH).await;
    let seconds = t.elapsed().as_secs_f64();
    let mut counts = [0; 3];
    for a in &answers {
        count(a, &mut counts);
    }
    Ok(PoolRun {
        seconds,
        instances: pool.instances(),
        counts,
        answers,
    })
}

/// Section 1's scaling table: each real job on `n` records with 1, 2 and
/// all cores' worth of instances; a note on whether every pool size gave
/// the same answers as one instance.
pub async fn scaling_table(
    b: &Bench,
    rt: &JobRuntime,
    mappings: &Arc<String>,
    n: usize,
) -> anyhow::Result<(Table, String)> {
    let mut table = Table::new(&[
        "job",
        "instances (cores)",
        "records",
        "run ms",
        "records/s",
        "µs/record (wall)",
        "speed-up",
        "outcomes",
    ]);
    let mut same = true;
    for (name, _) in JOBS {
        let job = Arc::new(rt.load_file(&b.project.job_wasm(name)).await?);
        let recs: Vec<String> = records::for_job(&b.project.jobs_src(), name, n, 11)?
            .iter()
            .map(Value::to_string)
            .collect();
        let mut one: Option<PoolRun> = None;
        for size in pool_sizes() {
            let run = pool_run(&job, mappings, &recs, size).await?;
            let base = one.as_ref().map_or(run.seconds, |o| o.seconds);
            b.say(format!(
                "{name}, pool of {size}: {:.0} records/s, {:.1} µs/record wall, speed-up {:.2} ({} instances)",
                run.records_per_sec(),
                run.us_per_record(),
                base / run.seconds,
                run.instances
            ));
            table.row(vec![
                name.into(),
                if size == cores() {
                    format!("{size} (all)")
                } else {
                    size.to_string()
                },
                n.to_string(),
                num(run.seconds * 1000.0, 0),
                num(run.records_per_sec(), 0),
                num(run.us_per_record(), 1),
                format!("{:.2}×", base / run.seconds),
                format!("{} / {} / {}", run.counts[0], run.counts[1], run.counts[2]),
            ]);
            match &one {
                None => one = Some(run),
                Some(o) => same &= o.answers == run.answers,
            }
        }
    }
    let note = format!(
        "Scaling rows: a run's pool of job instances (`JobPool`, `[jobs] pool_size`, default the number of cores) \
         mapping the same records warm, {BATCH} records per call per instance, in windows of {BATCH} records for each \
         instance, the next window queued while one is mapped; each instance is a wasmtime store of its own on a thread \
         of its own. Speed-up: the time of one instance ÷ the time of the pool. Answers of every pool size against one \
         instance, record by record: {}.",
        if same { "identical" } else { "DIFFERENT" }
    );
    Ok((
        table.caption(format!(
            "Across cores: the job layer on 1, 2 and all ({}) cores.",
            cores()
        )),
        note,
    ))
}

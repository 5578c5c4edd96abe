//! The child-process side of `bridge bench` (`bridge bench worker …`, hidden):
//! a fresh process that does one measured thing and prints one JSON line, so
//! cold starts are real and peak RSS (VmHWM) is the bridge's alone, not the
//! simulators'.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tracing::span::Id;
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

use bridge_mappings::MappingSet;
use bridge_partners::primero::PrimeroClient;
use bridge_partners::PartnerLimits;
use bridge_runtime::{JobContext, JobFailure, JobInstance, JobOutcome, JobRuntime, RuntimeConfig};
use bridge_service::config::BridgeConfig;

/// What a worker process does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WorkerCommand {
    /// Load one job from the precompile cache, map the first N records of a
    /// JSON array file, exit.
    Map {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        mappings: PathBuf,
        #[arg(long)]
        records: Option<usize>,
        /// Records per call into the job (`run-batch`); 1 = one call per record.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Map the records this many times (for profiling the mapping
        /// rather than the loading).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Map with a pool of this many instances (`JobPool`), in windows
        /// of `batch` records per instance; 0 = one instance, no pool.
        #[arg(long, default_value_t = 0)]
        pool: usize,
    },
    /// Load every component of a folder from the precompile cache, start and
    /// configure one instance of each, report load times and peak RSS.
    LoadAll {
        #[arg(long)]
        jobs: PathBuf,
        #[arg(long)]
        mappings: PathBuf,
    },
    /// Run one flow against a bridge.toml with the given concurrency and
    /// per-partner limits; report rate, per-record latency and peak RSS.
    Flow {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        flow: String,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        max_in_flight: usize,
        /// PING calls started per second at most.
        #[arg(long)]
        ping_rate: Option<f64>,
    },
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn runtime(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<JobRuntime>> {
    let mut config = RuntimeConfig::default();
    if let Some(dir) = cache_dir {
        config.cache_dir = dir;
    }
    Ok(Arc::new(JobRuntime::new(config)?))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The private memory of this process in bytes: `RssAnon` + `RssShmem` of
/// /proc/self/status (the heap and the jobs' linear memories). Unlike VmHWM
/// it leaves out file-backed pages (the mapped compiled code), whose residency
/// follows the page cache's state rather than the work done.
fn private_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
    };
    Some((kb("RssAnon:")? + kb("RssShmem:").unwrap_or(0)) * 1024)
}

/// Peak of [`private_bytes`], sampled every 5 ms on a thread of its own (the
/// kernel keeps no high-water mark of it).
struct PrivatePeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PrivatePeak {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                peak = peak.max(private_bytes().unwrap_or(0));
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Run a worker command; its result is printed as one JSON line on stdout,
/// with `peak_private_bytes` added (see [`PrivatePeak`]).
pub async fn run(cmd: WorkerCommand, cache_dir: Option<PathBuf>) -> anyhow::Result<Value> {
    let peak = PrivatePeak::start();
    let mut out = run_command(cmd, cache_dir).await?;
    if let Value::Object(map) = &mut out {
        map.insert("peak_private_bytes".into(), json!(peak.finish()));
    }
    Ok(out)
}

async fn run_command(cmd: WorkerCommand, cache_dir: Option<PathBuf>) -> anyhow::Result<Value> {
    match cmd {
        WorkerCommand::Map {
            job,
            input,
            mappings,
            records,
            batch,
            repeat,
            pool,
        } => {
            let how = (batch, repeat, pool);
            map(&job, &input, &mappings, records, how, cache_dir).await
        }
        WorkerCommand::LoadAll { jobs, mappings } => load_all(&jobs, &mappings, cache_dir).await,
        WorkerCommand::Flow {
            config,
            flow,
            concurrency,
            max_in_flight,
            ping_rate,
        } => {
            run_flow(
                &config,
                &flow,
                concurrency,
                max_in_flight,
                ping_rate,
                cache_dir,
            )
            .await
        }
    }
}

async fn map(
    job: &Path,
    input: &Path,
    mappings: &Path,
    records: Option<usize>,
    (batch, repeat, pool): (usize, usize, usize),
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    // Each record as the text it is in the file: the host hands jobs JSON
    // text, so a tree of every record (and writing each back out) is waste.
    let all: Vec<&RawValue> = serde_json::from_str(&text)?;
    let n = records.unwrap_or(all.len()).min(all.len());
    let set = MappingSet::load_dir(mappings)?;
    let rt = runtime(cache_dir)?;
    let loaded = Arc::new(rt.load_file(job).await?);
    let mut instance = JobInstance::new(loaded.clone()).await?;
    instance.configure(set.job_json()).await?;
    let ready = started.elapsed();
    let ctx = JobContext {
        flow: loaded.info.flow.clone(),
        run_id: "bench".into(),
        today: super::records::TODAY.into(),
        dry_run: true,
    };
    let (mut emit, mut skip, mut error) = (0usize, 0usize, 0usize);
    let mut tally = |result: &Result<JobOutcome, JobFailure>| match result {
        Ok(JobOutcome::Emit(_)) => emit += 1,
        Ok(JobOutcome::Skip(_)) => skip += 1,
        Err(_) => error += 1,
    };
    let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let items: Vec<(&str, &str)> = ids
        .iter()
        .zip(&all)
        .map(|(id, r)| (id.as_str(), r.get()))
        .collect();
    let t = Instant::now();
    if pool > 0 {
        let pool = bridge_runtime::JobPool::with_size(instance, ctx, pool, batch);
        for _ in 0..repeat.max(1) {
            let mut windows = std::pin::pin!(super::cores::windows(&pool, &items, batch));
            while let Some(answers) = windows.next().await {
                answers.iter().for_each(&mut tally);
            }
        }
        return Ok(json!({
            "records": n * repeat.max(1),
            "counts": {"emit": emit, "skip": skip, "error": error},
            "ready_ms": ms(ready),
            "from_cache": loaded.from_cache,
            "batch_ms": ms(t.elapsed()),
            "total_ms": ms(started.elapsed()),
            "instances": pool.instances(),
            "peak_rss_bytes": peak_rss_bytes(),
        }));
    }
    for _ in 0..repeat.max(1) {
        if batch <= 1 {
            for (id, record) in &items {
                tally(&instance.run(&ctx, id, record).await);
            }
        } else {
            for chunk in items.chunks(batch) {
                for result in instance.run_batch(&ctx, chunk).await {
                    tally(&result);
                }
            }
        }
    }
    Ok(json!({
        "records": n * repeat.max(1),
        "counts": {"emit": emit, "skip": skip, "error": error},
        "ready_ms": ms(ready),
        "from_cache": loaded.from_cache,
        "batch_ms": ms(t.elapsed()),
        "total_ms": ms(started.elapsed()),
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

async fn load_all(
    jobs: &Path,
    mappings: &Path,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let rt = runtime(cache_dir)?;
    let set = MappingSet::load_dir(mappings)?;
    let files = bridge_flows::app::job_files(jobs)?;
    let mut each = Vec::new();
    let mut loaded = Vec::new();
    for path in &files {
        let t = Instant::now();
        let job = Arc::new(rt.load_file(path).await?);
        each.push(json!({
            "job": job.name,
            "load_ms": ms(t.elapsed()),
            "from_cache": job.from_cache,
        }));
        loaded.push(job);
    }
    let load_total = started.elapsed();
    // Every job live at once, as in a service serving all its flows.
    let mut instances = Vec::new();
    for job in &loaded {
        let mut instance = JobInstance::new(job.clone()).await?;
        if set.missing_tables(&job.info.tables).is_empty() {
            // A job of the other design may refuse this country's mappings.
            let _ = instance.configure(set.job_json()).await;
        }
        instances.push(instance);
    }
    Ok(json!({
        "jobs": each,
        "all_from_cache": loaded.iter().all(|j| j.from_cache),
        "load_total_ms": ms(load_total),
        "with_instances_ms": ms(started.elapsed()),
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

/// First entry of each `record` span: when its record started being worked on.
struct FirstEnter(Instant);

/// Collects how long each `record` span lived (first entry to close).
#[derive(Clone, Default)]
pub struct RecordTimer {
    pub samples: Arc<Mutex<Vec<f64>>>,
}

impl<S> Layer<S> for RecordTimer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if ext.get_mut::<FirstEnter>().is_none() {
                ext.insert(FirstEnter(Instant::now()));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(first) = span.extensions().get::<FirstEnter>() {
                let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
                samples.push(ms(first.0.elapsed()));
            }
        }
    }
}

/// The worker's logging: warnings to stderr, plus the record timer (which
/// sees only `record` spans, whatever the log level).
pub fn install_subscriber(log: &str) -> RecordTimer {
    let timer = RecordTimer::default();
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(
            bridge_telemetry::make_layer(bridge_telemetry::LogFormat::Human, std::io::stderr)
                .with_filter(filter),
        )
        .with(
            timer
                .clone()
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.is_span() && m.name() == "record"
                })),
        )
        .try_init();
    timer
}

static TIMER: std::sync::OnceLock<RecordTimer> = std::sync::OnceLock::new();

/// Called by the CLI before anything logs, instead of its own subscriber.
pub fn init_worker_tracing(log: &str) {
    let _ = TIMER.set(install_subscriber(log));
}

/// The `p`-th percentile (0–100) of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_flow(
    config_path: &Path,
    flow: &str,
    concurrency: usize,
    max_in_flight: usize,
    ping_rate: Option<f64>,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let config = BridgeConfig::load(config_path)?;
    // A bench run works on a fresh folder of its own.
    let mut app =
        bridge_service::build::from_config(&config, cache_dir, bridge_store::OpenMode::Init)
            .await?;
    let limits = PartnerLimits {
        max_in_flight: max_in_flight.max(1),
        rate_per_sec: None,
    };
    app.record_concurrency = concurrency.max(1);
    app.ping = app.ping.take().map(|p| {
        p.with_limits(PartnerLimits {
            rate_per_sec: ping_rate,
            ..limits
        })
    });
    let mut primero = config.primero_client_config()?;
    primero.limits = limits;
    app.primero = PrimeroClient::new(primero)?;
    let ready = started.elapsed();
    let t = Instant::now();
    // As `bridge run` runs it: recorded, its records streamed to the state
    // database as it goes.
    let report = app
        .run_recorded_on(flow, bridge_store::Trigger::Manual, super::records::TODAY)
        .await?;
    let elapsed = t.elapsed();
    let mut samples = TIMER
        .get()
        .map(|t| std::mem::take(&mut *t.samples.lock().unwrap_or_else(|e| e.into_inner())))
        .unwrap_or_default();
    samples.sort_by(f64::total_cmp);
    let mut labels = std::collections::BTreeMap::<String, usize>::new();
    for r in &report.records {
        *labels.entry(r.outcome.label().to_string()).or_default() += 1;
    }
    for (label, n) in &report.beyond.by_label {
        *labels.entry(label.to_string()).or_default() += n;
    }
    Ok(json!({
        "flow": flow,
        "fetched": report.fetched,
        "records": report.total(),
        "delivered": report.delivered(),
        "acknowledged": report.acknowledged(),
        "outcomes": labels,
        "aborted": report.aborted,
        "ready_ms": ms(ready),
        "run_ms": ms(elapsed),
        "records_per_sec": report.total() as f64 / elapsed.as_secs_f64().max(1e-9),
        "timed_records": samples.len(),
        "p50_ms": percentile(&samples, 50.0),
        "p99_ms": percentile(&samples, 99.0),
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

//! The process-wide engine and job loading.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine};

use super::approvals::ApprovalGate;
use super::bindings::{self, HostState, JobIndices, JobInfo};
use super::cache::{CacheOutcome, PrecompileCache};
use super::error::LoadError;
use super::instance::JobInstance;
use super::policy::{allowed_imports_text, inspect_component};

/// Per-call limits for job code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one call into a job (`configure` or `run`).
    pub call_timeout: Duration,
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// Calls of `run` one instance serves before a fresh one (from
    /// `InstancePre`, configured again) replaces it; 0 = never. A job's
    /// garbage-collected heap grows in steps within an instance and linear
    /// memory never shrinks, so without this an instance's memory follows
    /// the number of records it has seen (measured: the WF 1.1 job at 9 MiB
    /// after 1,000 records, 25 MiB after 10,000, 64 MiB after 30,000). At
    /// 1,000 a run's peak memory still followed its size (a WF 1.1 instance's
    /// dirty pages 3.9 MB in a run of 1,000 records, 5.6 MB in one of
    /// 10,000); at 500 it stayed within 1.2% from 1,000 to 10,000 records.
    /// Lower costs more than the instantiate: a fresh instance maps its first
    /// records slower (at 250 the job bench's mean was 12 µs a record above
    /// 1,000's). Since jobs/lib encodes payloads into a reused buffer (a
    /// fresh one per record was most of that growth: a process mapping
    /// 30,000 WF 1.1 records on one instance 85 MB → 41 MB) what is left is
    /// tenured garbage the engine's full collections rarely reclaim, about
    /// 0.5 KB a record. 2,000 would map a fresh 10,000-record process 11%
    /// faster on 2 cores, but WF 2.1's peak memory from 1,000 to 10,000
    /// records then read +0.7% to +6.7% over four bench runs (at 500: −4.7%
    /// to +9.0% over six: the measure's own noise), so 500 stays.
    pub recycle_after_calls: u32,
    /// Instances of a job mapping one run's records at once, each on a
    /// thread of its own (`JobPool`); default: the machine's cores.
    pub pool_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            memory_bytes: 256 * 1024 * 1024,
            // A replacement costs one instantiate and configure (about 1 ms)
            // and a cold start of the job's code: a few µs a record.
            recycle_after_calls: 500,
            pool_size: default_pool_size(),
        }
    }
}

/// One instance per core: the most a run's mapping can use at once.
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub cache_dir: PathBuf,
    pub limits: Limits,
    /// How often the epoch advances; the deadline is checked at this granularity.
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: PrecompileCache::default_dir(),
            limits: Limits::default(),
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// One engine and linker for the whole process.
pub struct JobRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: PrecompileCache,
    limits: Limits,
    ticker_stop: Arc<AtomicBool>,
    approvals: Option<Arc<ApprovalGate>>,
}

impl Drop for JobRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A validated, precompiled job version, ready to instantiate in microseconds.
pub struct LoadedJob {
    /// Name the host knows the job by (its folder / file stem).
    pub name: String,
    /// What the job says about itself.
    pub info: JobInfo,
    /// SHA-256 of the component bytes: the version identity.
    pub content_hash: String,
    /// Whether the precompiled artifact came from the cache.
    pub from_cache: bool,
    /// Time to get from bytes to a ready `InstancePre` (cache load or compile).
    pub load_time: Duration,
    pub(crate) pre: InstancePre<HostState>,
    /// Where the `job` world's exports are in an instance (checked against
    /// the world when the job is loaded).
    pub(crate) indices: JobIndices,
    /// The `run-batch` export (world `batch-job`), when the component has
    /// one of the right type.
    pub(crate) run_batch: Option<ComponentExportIndex>,
    pub(crate) limits: Limits,
}

impl LoadedJob {
    /// The compiled component (what `bridge job inspect` lists the imports
    /// and exports of, without compiling it again).
    pub fn component(&self) -> &wasmtime::component::Component {
        self.pre.component()
    }

    /// Whether the component maps several records per call (`run-batch`).
    pub fn maps_in_batches(&self) -> bool {
        self.run_batch.is_some()
    }
}

impl std::fmt::Debug for LoadedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedJob")
            .field("name", &self.name)
            .field("version", &self.info.version)
            .field("content_hash", &self.content_hash)
            .finish()
    }
}

impl JobRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            // Copy-on-write linear memory images make instantiation cheap.
            .memory_init_cow(true);
        // For profiling job code with `perf`: names the compiled wasm functions.
        if std::env::var_os("BRIDGE_WASM_PERFMAP").is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Cache {
            path: config.cache_dir.clone(),
            reason: format!("engine: {e:#}"),
        })?;
        let mut linker = Linker::new(&engine);
        bindings::Job::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(
            |e| LoadError::Cache {
                path: config.cache_dir.clone(),
                reason: format!("linker: {e:#}"),
            },
        )?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("bridge-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Cache {
                    path: config.cache_dir.clone(),
                    reason: format!("epoch thread: {e}"),
                })?;
        }
        Ok(Self {
            engine,
            linker,
            cache: PrecompileCache::new(config.cache_dir),
            limits: config.limits,
            ticker_stop,
            approvals: None,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn cache(&self) -> &PrecompileCache {
        &self.cache
    }

    /// From now on, load only components `gate` approves (`[jobs]
    /// require_approved`).
    pub fn with_approvals(mut self, gate: Arc<ApprovalGate>) -> Self {
        self.approvals = Some(gate);
        self
    }

    /// The approvals gate, when only approved components may load.
    pub fn approvals(&self) -> Option<&Arc<ApprovalGate>> {
        self.approvals.as_ref()
    }

    /// Load a job component from a file; the job is named after the file stem.
    pub async fn load_file(&self, path: &Path) -> Result<LoadedJob, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".to_string());
        self.load_bytes(&name, &bytes).await
    }

    /// Validate and prepare a component: refuse it unless approved (when
    /// approvals are required; before any of its code is compiled or run),
    /// precompile (or load from cache), refuse forbidden imports, check the
    /// world, and call `describe`.
    pub async fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<LoadedJob, LoadError> {
        let started = Instant::now();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
        let content_hash = hex::encode(digest);
        if let Some(gate) = &self.approvals {
            gate.check(&content_hash)
                .map_err(|reason| LoadError::NotApproved {
                    job: name.to_string(),
                    reason,
                })?;
        }
        let (component, outcome) = self.cache.load_hashed(&self.engine, name, bytes, &digest)?;
        let (instance_pre, indices) = self.link(name, &component)?;
        let run_batch = batch_export(&component, name);
        let load_time = started.elapsed();

        let mut job = LoadedJob {
            name: name.to_string(),
            info: JobInfo {
                name: String::new(),
                version: String::new(),
                flow: String::new(),
                tables: Vec::new(),
            },
            content_hash,
            from_cache: outcome == CacheOutcome::Hit,
            load_time,
            pre: instance_pre,
            indices,
            run_batch,
            limits: self.limits,
        };
        job.info = JobInstance::describe(&job)
            .await
            .map_err(|e| LoadError::Describe {
                job: name.to_string(),
                reason: e.to_string(),
            })?;
        check_info(name, &job.info)?;
        bridge_telemetry::metrics().component_load(name, load_time.as_secs_f64(), job.from_cache);
        tracing::info!(
            job = name,
            version = %job.info.version,
            hash = %job.content_hash,
            from_cache = job.from_cache,
            load_ms = load_time.as_millis() as u64,
            "job loaded"
        );
        Ok(job)
    }
}

impl JobRuntime {
    /// Whether the host can link `component`: only allowed imports, each of
    /// the type the host provides (an allowed interface that declares more
    /// than the contract fails here), and the world's exports. What loading
    /// checks, and what `bridge job inspect` reports.
    pub fn link(
        &self,
        name: &str,
        component: &Component,
    ) -> Result<(InstancePre<HostState>, JobIndices), LoadError> {
        let report = inspect_component(&self.engine, component);
        if let Some(import) = report.forbidden_imports.first() {
            return Err(LoadError::ForbiddenImport {
                job: name.to_string(),
                import: import.clone(),
                allowed: allowed_imports_text(import),
            });
        }
        if !report.missing_exports.is_empty() {
            return Err(LoadError::WrongWorld {
                job: name.to_string(),
                reason: format!("missing exports: {}", report.missing_exports.join(", ")),
            });
        }
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            job: name.to_string(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(wrong_world)?;
        let indices = JobIndices::new(&instance_pre).map_err(wrong_world)?;
        Ok((instance_pre, indices))
    }
}

/// SHA-256 of a component's bytes, lowercase hex: a job version's identity
/// (`LoadedJob::content_hash`, the approvals file's `sha256`).
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// What `describe` returned must be codes (`job_text::is_code`): the name,
/// version and flow are logged and compared at hot reload, the tables
/// looked up.
fn check_info(name: &str, info: &JobInfo) -> Result<(), LoadError> {
    let fields = [
        ("name", &info.name),
        ("version", &info.version),
        ("flow", &info.flow),
    ];
    let bad = fields
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(info.tables.iter().map(|t| ("tables", t.as_str())))
        .find(|(_, v)| !super::job_text::is_code(v));
    match bad {
        Some((field, _)) => Err(LoadError::Describe {
            job: name.to_string(),
            reason: format!(
                "`{field}` is not a code (letters, digits and _.:/#-, at most {} characters)",
                super::job_text::CODE_MAX_CHARS
            ),
        }),
        None => Ok(()),
    }
}

/// The component's `run-batch` export, if it has one. Its type is checked at
/// each call; a function under that name of another type is ignored here
/// (with a warning) and the job runs one record per call.
fn batch_export(component: &Component, job: &str) -> Option<ComponentExportIndex> {
    let (item, index) = component.get_export(None, bindings::RUN_BATCH_EXPORT)?;
    let ComponentItem::ComponentFunc(func) = item else {
        tracing::warn!(
            job,
            "export run-batch is not a function; mapping one record per call"
        );
        return None;
    };
    if func.params().len() != 2 || func.results().len() != 1 {
        tracing::warn!(
            job,
            "export run-batch has an unexpected signature; mapping one record per call"
        );
        return None;
    }
    Some(index)
}

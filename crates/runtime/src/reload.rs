//! Hot reload of jobs and mappings.
//!
//! The catalog holds the current version of each job and of the mapping set
//! behind an `ArcSwap`. A changed file is loaded and validated off to the side;
//! only a version that passes is swapped in, atomically. A run takes its
//! versions once at its start, so a record in flight finishes on the version it
//! began with; a refused version leaves the old one serving.
//!
//! A deployment serves each flow with the flow's own job (named as the flow),
//! or with the variant its `deployment.toml` names under `[jobs]`
//! ([`serving_of`]); the other components of the jobs folder are not loaded
//! into the catalog. Which job serves a flow is fixed when the catalog opens:
//! a reloaded mapping folder whose `[jobs]` differs is refused (a reload of
//! the service, SIGHUP, opens a new catalog).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::engine::{JobRuntime, LoadedJob};
use super::error::LoadError;
use super::instance::JobInstance;
use bridge_mappings::{MappingError, MappingSet};

/// Something the watcher did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    JobSwapped {
        job: String,
        from: String,
        to: String,
    },
    JobRefused {
        job: String,
        error: String,
    },
    MappingsSwapped {
        from: String,
        to: String,
    },
    MappingsRefused {
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("mappings: {0}")]
    Mappings(#[from] MappingError),
}

/// Cheap change detection: size and modification time of each file.
type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn stamp_of(path: &Path) -> Stamp {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

struct Watched<T> {
    path: PathBuf,
    current: ArcSwap<T>,
    stamp: Mutex<Stamp>,
}

impl<T> Watched<T> {
    fn new(path: PathBuf, value: Arc<T>) -> Self {
        let stamp = stamp_of(&path);
        Self {
            path,
            current: ArcSwap::new(value),
            stamp: Mutex::new(stamp),
        }
    }

    /// The new stamp when the files changed since the last look.
    fn changed(&self) -> Option<Stamp> {
        let now = stamp_of(&self.path);
        let guard = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        (*guard != now).then_some(now)
    }

    fn remember(&self, stamp: Stamp) {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
    }
}

/// The jobs and the mapping set a host serves.
pub struct Catalog {
    runtime: Arc<JobRuntime>,
    jobs: BTreeMap<String, Watched<LoadedJob>>,
    mappings: Watched<MappingSet>,
    /// Serialises reloads; readers never wait on it.
    reload_lock: tokio::sync::Mutex<()>,
    /// Refuse a reloaded mapping set that holds placeholders (`CHANGE-ME:`).
    refuse_placeholders: std::sync::atomic::AtomicBool,
}

impl Catalog {
    /// Load every job and the mappings; the jobs this deployment serves
    /// ([`serving_of`]) must all be valid to start, and so must each
    /// `[jobs]` entry of its `deployment.toml` ([`job_choice_problems`]).
    pub async fn open(
        runtime: Arc<JobRuntime>,
        job_files: &[PathBuf],
        mappings_dir: &Path,
    ) -> Result<Self, CatalogError> {
        let mappings = Arc::new(MappingSet::load_dir(mappings_dir)?);
        let mut loaded = Vec::with_capacity(job_files.len());
        for path in job_files {
            loaded.push((path.clone(), runtime.load_file(path).await?));
        }
        let folder = job_files.first().and_then(|p| p.parent());
        let components: Vec<&LoadedJob> = loaded.iter().map(|(_, job)| job).collect();
        if let Some(e) = job_choice_problems(&components, &mappings, folder)
            .into_iter()
            .next()
        {
            return Err(e.into());
        }
        let mut jobs = BTreeMap::new();
        for (path, job) in loaded {
            // A deployment is PING or DTP, and serves a flow with one job:
            // the others need tables or rules this country does not have.
            let serving = serving_of(&job, &mappings);
            if serving != Serving::Serves {
                tracing::info!(job = %job.name, flow = %job.info.flow, design = %mappings.deployment.design, "job not served here: {serving}");
                continue;
            }
            let job = Arc::new(job);
            validate(&job, &mappings).await?;
            announce(&runtime, &job, "job serving");
            jobs.insert(job.name.clone(), Watched::new(path.clone(), job));
        }
        Ok(Self {
            runtime,
            jobs,
            mappings: Watched::new(mappings_dir.to_path_buf(), mappings),
            reload_lock: tokio::sync::Mutex::new(()),
            refuse_placeholders: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on, refuse a reloaded mapping set that holds placeholders.
    pub fn refuse_placeholders(&self) {
        self.refuse_placeholders
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The current version of a job, by its name.
    pub fn job(&self, name: &str) -> Option<Arc<LoadedJob>> {
        self.jobs.get(name).map(|w| w.current.load_full())
    }

    /// The name of the job serving `flow`: the variant `deployment.toml`
    /// names under `[jobs]`, else the flow's own job.
    pub fn job_for(&self, flow: &str) -> String {
        self.mappings().job_for(flow).to_string()
    }

    /// The current version of the job serving `flow`.
    pub fn job_serving(&self, flow: &str) -> Option<Arc<LoadedJob>> {
        self.job(&self.job_for(flow))
    }

    /// [`Catalog::instance`] of the job serving `flow`: what a flow's run uses.
    pub async fn flow_instance(&self, flow: &str) -> Result<JobInstance, LoadError> {
        self.instance(&self.job_for(flow)).await
    }

    pub fn job_names(&self) -> impl Iterator<Item = &str> {
        self.jobs.keys().map(String::as_str)
    }

    /// The current mapping set.
    pub fn mappings(&self) -> Arc<MappingSet> {
        self.mappings.current.load_full()
    }

    /// A job instance configured with the current mappings: what a run uses
    /// (one job version and one mapping version for the whole run). Inside
    /// [`recording_versions`], the versions are noted for the run's record.
    pub async fn instance(&self, name: &str) -> Result<JobInstance, LoadError> {
        let job = self.job(name).ok_or_else(|| LoadError::NotLoaded {
            job: name.to_string(),
        })?;
        let mappings = self.mappings();
        let _ = USED.try_with(|used| {
            let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.job_hashes.contains(&job.content_hash) {
                used.job_hashes.push(job.content_hash.clone());
            }
            used.mappings_hash = Some(mappings.content_hash.clone());
        });
        configured_instance(job, &mappings).await
    }

    /// Look for changed files and swap in every new version that validates.
    pub async fn poll(&self) -> Vec<ReloadEvent> {
        let _guard = self.reload_lock.lock().await;
        let mut events = Vec::new();

        if let Some(stamp) = self.mappings.changed() {
            self.mappings.remember(stamp);
            let old = self.mappings();
            match MappingSet::load_dir(&self.mappings.path) {
                Ok(new) if new.content_hash == old.content_hash => {}
                Ok(new) => {
                    let new = Arc::new(new);
                    let mut refusal = self
                        .refuse_placeholders
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .then(|| new.placeholder_refusal())
                        .flatten();
                    if refusal.is_none() && !new.same_jobs(&old) {
                        refusal = Some(format!(
                            "{}: [jobs] changed: which job serves a flow changes at a start or a reload of the service (SIGHUP), not while it runs; the jobs serving now keep serving",
                            new.dir.join(bridge_mappings::DEPLOYMENT_FILE).display()
                        ));
                    }
                    if refusal.is_none() {
                        for watched in self.jobs.values() {
                            if let Err(e) = validate(&watched.current.load(), &new).await {
                                refusal = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    match refusal {
                        Some(error) => events.push(ReloadEvent::MappingsRefused { error }),
                        None => {
                            events.push(ReloadEvent::MappingsSwapped {
                                from: old.content_hash.clone(),
                                to: new.content_hash.clone(),
                            });
                            self.mappings.current.store(new);
                        }
                    }
                }
                Err(e) => events.push(ReloadEvent::MappingsRefused {
                    error: e.to_string(),
                }),
            }
        }

        // An edited approvals file is read again, and every job whose file
        // holds another version than the one serving is tried again: a
        // version refused as unapproved goes in once it is approved.
        let approvals_changed = self.runtime.approvals().is_some_and(|g| g.refresh());
        let mappings = self.mappings();
        for (name, watched) in &self.jobs {
            match watched.changed() {
                Some(stamp) => watched.remember(stamp),
                None if approvals_changed => {}
                None => continue,
            }
            let old = watched.current.load_full();
            let bytes = match std::fs::read(&watched.path) {
                Ok(bytes) => bytes,
                Err(source) => {
                    let error = LoadError::Read {
                        path: watched.path.clone(),
                        source,
                    };
                    events.push(ReloadEvent::JobRefused {
                        job: name.clone(),
                        error: error.to_string(),
                    });
                    continue;
                }
            };
            // The same bytes as the version serving: nothing to load (nor
            // to approve again).
            if super::engine::content_hash(&bytes) == old.content_hash {
                continue;
            }
            let loaded = match self.runtime.load_bytes(name, &bytes).await {
                Ok(mut job) => {
                    // Keep the name the catalog knows the job by.
                    job.name = name.clone();
                    let job = Arc::new(job);
                    match replaces(&old, &job) {
                        Ok(()) => validate(&job, &mappings).await.map(|()| job),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match loaded {
                Ok(job) => {
                    events.push(ReloadEvent::JobSwapped {
                        job: name.clone(),
                        from: old.content_hash.clone(),
                        to: job.content_hash.clone(),
                    });
                    announce(&self.runtime, &job, "job version swapped in");
                    watched.current.store(job);
                }
                Err(e) => events.push(ReloadEvent::JobRefused {
                    job: name.clone(),
                    error: e.to_string(),
                }),
            }
        }
        for event in &events {
            match event {
                // `announce` logged the version swapped in, whole hash included.
                ReloadEvent::JobSwapped { .. } => {}
                ReloadEvent::JobRefused { job, error } => {
                    tracing::error!(
                        job,
                        error,
                        "new job version refused; previous version keeps serving"
                    )
                }
                ReloadEvent::MappingsSwapped { from, to } => {
                    tracing::info!(from = &from[..12], to = &to[..12], "mappings swapped in")
                }
                ReloadEvent::MappingsRefused { error } => {
                    tracing::error!(
                        error,
                        "new mappings refused; previous mappings keep serving"
                    )
                }
            }
        }
        events
    }

    /// Poll for changes every `interval` until the catalog is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(catalog) = weak.upgrade() else {
                    return;
                };
                catalog.poll().await;
            }
        })
    }
}

/// The job and mapping versions a run used (`runs show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionsUsed {
    /// SHA-256 of each job component handed out, in order.
    pub job_hashes: Vec<String>,
    /// Content hash of the mapping set the last instance was configured with.
    pub mappings_hash: Option<String>,
}

tokio::task_local! {
    static USED: Arc<Mutex<VersionsUsed>>;
}

/// Run `work`, noting the versions every [`Catalog::instance`] inside it
/// hands out (in this task; the flows take their instance at the start of a
/// run, in the run's own task).
pub async fn recording_versions<F: std::future::Future>(work: F) -> (F::Output, VersionsUsed) {
    let used = Arc::new(Mutex::new(VersionsUsed::default()));
    let out = USED.scope(used.clone(), work).await;
    let used = used.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (out, used)
}

/// Report the version now serving: a log line with the job's name, version
/// and whole component hash (and whether approvals are required), and the
/// `bridge_job_info` metric.
fn announce(runtime: &JobRuntime, job: &LoadedJob, message: &'static str) {
    let approved = match runtime.approvals() {
        Some(gate) => {
            if gate.check(&job.content_hash).is_ok() {
                "yes"
            } else {
                "no"
            }
        }
        None => "not-required",
    };
    tracing::info!(
        job = %job.name,
        version = %job.info.version,
        hash = %job.content_hash,
        approved,
        "{message}"
    );
    bridge_telemetry::metrics().job_serving(&job.name, &job.info.version, &job.content_hash);
}

/// Whether a job's flow (`ping-…`, `dtp-…`) belongs to the design this
/// deployment does not use. Flows of neither prefix belong to both.
pub fn serves_other_design(flow: &str, design: &str) -> bool {
    ["ping", "dtp"]
        .iter()
        .any(|d| *d != design && flow.starts_with(&format!("{d}-")))
}

/// Whether a flow belongs to one of the designs (`ping-…`, `dtp-…`); the
/// components of the tests describe flows of neither.
fn is_design_flow(flow: &str) -> bool {
    ["ping-", "dtp-"].iter().any(|d| flow.starts_with(d))
}

/// Whether a loaded component serves a deployment, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    Serves,
    /// Its flow belongs to the design the deployment does not use.
    OtherDesign,
    /// The deployment's `[jobs]` names another job for its flow.
    Replaced {
        by: String,
    },
    /// A variant (a job named otherwise than its flow) that the
    /// deployment's `[jobs]` does not name.
    NotNamed,
}

impl std::fmt::Display for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Serving::Serves => write!(f, "it serves its flow"),
            Serving::OtherDesign => write!(f, "it serves the other design"),
            Serving::Replaced { by } => {
                write!(f, "deployment.toml [jobs] names `{by}` for its flow")
            }
            Serving::NotNamed => write!(
                f,
                "it is a variant that deployment.toml [jobs] does not name"
            ),
        }
    }
}

/// Whether `job` (named by its file) serves the deployment of `mappings`:
/// the job `[jobs]` names for its flow, or, where none is named, the flow's
/// own job. A variant serves only where it is named, so one folder of
/// components may hold several countries' variants.
pub fn serving_of(job: &LoadedJob, mappings: &MappingSet) -> Serving {
    let flow = job.info.flow.as_str();
    if serves_other_design(flow, &mappings.deployment.design) {
        return Serving::OtherDesign;
    }
    match mappings.job_choice(flow) {
        Some(choice) if choice.job == job.name => Serving::Serves,
        Some(choice) => Serving::Replaced {
            by: choice.job.clone(),
        },
        None if job.name != flow && is_design_flow(flow) => Serving::NotNamed,
        None => Serving::Serves,
    }
}

/// The `[jobs]` entries of `mappings` whose job is not among `components`
/// (not built) or serves another flow than the entry's, each located at its
/// line of `deployment.toml`. `folder` is where the components were found.
pub fn job_choice_problems(
    components: &[&LoadedJob],
    mappings: &MappingSet,
    folder: Option<&Path>,
) -> Vec<MappingError> {
    let mut problems = Vec::new();
    for choice in &mappings.jobs {
        let job = &choice.job;
        let message = match components.iter().find(|c| &c.name == job) {
            None => format!(
                "job `{job}` is not built: no {job}.wasm {} (a job is a folder jobs/{job}/; build it with `bridge jobs build {job}`)",
                match folder {
                    Some(dir) => format!("in {}", dir.display()),
                    None => "among the job components".to_string(),
                }
            ),
            Some(c) if c.info.flow != choice.flow => format!(
                "job `{job}` serves flow `{}`, not `{}` (its describe().flow; a variant keeps the flow of the job it was made from)",
                c.info.flow, choice.flow
            ),
            Some(_) => continue,
        };
        problems.push(mappings.job_choice_error(choice, message));
    }
    problems
}

/// Whether `new` is another version of the job `old` is: the same job name
/// and flow, as each describes itself. Another job's component copied over
/// the file would fail every record of the next runs and burn a delivery
/// attempt for each. (The contract version is the same for both: a
/// component built against another one is refused at load, by its imports.)
fn replaces(old: &LoadedJob, new: &LoadedJob) -> Result<(), LoadError> {
    let refuse = |reason: String| {
        Err(LoadError::NotAReplacement {
            job: old.name.clone(),
            reason,
        })
    };
    if new.info.name != old.info.name {
        return refuse(format!(
            "it describes job `{}`, the serving version job `{}`",
            new.info.name, old.info.name
        ));
    }
    if new.info.flow != old.info.flow {
        return refuse(format!(
            "it serves flow `{}`, the serving version flow `{}`",
            new.info.flow, old.info.flow
        ));
    }
    Ok(())
}

/// A job fits a mapping set when every table it reads exists and its
/// `configure` accepts the set.
async fn validate(job: &Arc<LoadedJob>, mappings: &Arc<MappingSet>) -> Result<(), LoadError> {
    configured_instance(job.clone(), mappings).await.map(|_| ())
}

async fn configured_instance(
    job: Arc<LoadedJob>,
    mappings: &Arc<MappingSet>,
) -> Result<JobInstance, LoadError> {
    if let Some(table) = mappings.missing_tables(&job.info.tables).first() {
        return Err(LoadError::MissingTable {
            job: job.name.clone(),
            table: table.to_string(),
        });
    }
    let name = job.name.clone();
    let configure_err = |e: super::error::JobFailure| LoadError::Configure {
        job: name.clone(),
        reason: e.to_string(),
    };
    let mut instance = JobInstance::new(job).await.map_err(configure_err)?;
    instance
        .configure_with(mappings.clone())
        .await
        .map_err(configure_err)?;
    Ok(instance)
}

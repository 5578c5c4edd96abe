//! Wiring: clients, job runtime and catalog for a configured deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::BridgeConfig;
use crate::connectors::ping::{PingClient, PingConfig};
use crate::connectors::primero::{PrimeroClient, PrimeroConfig};
use crate::flows::dtp_decision_to_dtp::{self, Dtp12};
use crate::flows::dtp_referral_to_dtp::{self, Dtp21};
use crate::flows::ping_decision_to_primero::{self, Ping22};
use crate::flows::ping_decision_to_progres::{self, Ping12};
use crate::flows::ping_referral_to_primero::{self, Ping11};
use crate::flows::ping_referral_to_progres::{self, Ping21};
use crate::flows::RunReport;
use crate::mappings::MappingSet;
use crate::runtime::reload::Catalog;
use crate::runtime::{JobRuntime, RuntimeConfig};
use crate::flows::ledger::DeliveryPolicy;
use crate::store::{SqliteStore, Store, Trigger};
use tokio_util::sync::CancellationToken;

pub struct App {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<JobRuntime>,
    pub catalog: Arc<Catalog>,
    pub primero: PrimeroClient,
    pub ping: Option<PingClient>,
    /// Design A only.
    pub dtp: Option<crate::connectors::dtp::DtpClient>,
    /// Attempts before a record goes to the dead letter.
    pub delivery: DeliveryPolicy,
    /// Records of one run worked on at once (partner calls are further
    /// bounded per partner by the clients).
    pub record_concurrency: usize,
    /// Cancelled on SIGTERM: flows finish the records in flight and stop.
    pub stop: CancellationToken,
}

/// Which dead-letter entries to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySelection {
    One(i64),
    All,
}

/// The flows `bridge flow run` knows.
pub const FLOWS: &[&str] = &[
    ping_referral_to_primero::FLOW,
    ping_referral_to_progres::FLOW,
    dtp_referral_to_dtp::FLOW,
    ping_decision_to_progres::FLOW,
    ping_decision_to_primero::FLOW,
    dtp_decision_to_dtp::FLOW,
];

/// Every `*.wasm` in a folder.
pub fn job_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the jobs folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no job components (*.wasm) in {}: build them with `bridge jobs build`",
        dir.display()
    );
    Ok(files)
}

impl App {
    pub async fn new(
        store: Arc<dyn Store>,
        runtime: Arc<JobRuntime>,
        primero: PrimeroConfig,
        ping: Option<PingConfig>,
        jobs: &[PathBuf],
        mappings: &Path,
    ) -> anyhow::Result<Self> {
        let catalog = Arc::new(Catalog::open(runtime.clone(), jobs, mappings).await?);
        Ok(Self {
            store,
            runtime,
            catalog,
            primero: PrimeroClient::new(primero)?,
            ping: ping.map(PingClient::new).transpose()?,
            dtp: None,
            delivery: DeliveryPolicy::default(),
            record_concurrency: 8,
            stop: CancellationToken::new(),
        })
    }

    pub async fn from_config(
        config: &BridgeConfig,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut rc = RuntimeConfig::default();
        if let Some(dir) = cache_dir {
            rc.cache_dir = dir;
        }
        if let Some(ms) = config.jobs.call_timeout_ms {
            rc.limits.call_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(mib) = config.jobs.memory_mib {
            rc.limits.memory_bytes = mib * 1024 * 1024;
        }
        let mappings_dir = config.resolve(&config.jobs.mappings);
        let mappings = MappingSet::load_dir(&mappings_dir)?;
        let ping = match &config.ping {
            Some(_) => Some(config.ping_client_config(&mappings.deployment)?),
            None => None,
        };
        let dtp = config
            .dtp_client_config()?
            .map(crate::connectors::dtp::DtpClient::new)
            .transpose()
            .with_context(|| format!("{}: [dtp]", config.file.display()))?;
        let jobs = job_files(&config.resolve(&config.jobs.dir))?;
        let store: Arc<dyn Store> = match &config.state {
            Some(state) => Arc::new(SqliteStore::open(&config.resolve(&state.path)).await?),
            None => Arc::new(SqliteStore::in_memory().await?),
        };
        let mut app = Self::new(
            store,
            Arc::new(JobRuntime::new(rc)?),
            config.primero_client_config()?,
            ping,
            &jobs,
            &mappings_dir,
        )
        .await?;
        app.dtp = dtp;
        Ok(app)
    }

    /// Run one flow once and keep its run and record outcomes in the store.
    pub async fn run_recorded(&self, flow: &str, trigger: Trigger) -> anyhow::Result<RunReport> {
        // TODO(lead): persist the run; this stub only runs it.
        let _ = trigger;
        self.run_flow(flow, &new_run_id(), &today()).await
    }

    /// Take dead-letter entries out and run their flows again for them.
    pub async fn replay(&self, selection: ReplaySelection) -> anyhow::Result<Vec<RunReport>> {
        // TODO(lead): implement.
        let _ = selection;
        Ok(Vec::new())
    }

    /// Run one flow once.
    pub async fn run_flow(
        &self,
        flow: &str,
        run_id: &str,
        today: &str,
    ) -> anyhow::Result<RunReport> {
        match flow {
            ping_referral_to_primero::FLOW => {
                let ping = self
                    .ping
                    .as_ref()
                    .context("flow ping-1.1 needs a [ping] section in the config")?;
                Ok(Ping11 {
                    ping,
                    primero: &self.primero,
                    catalog: &self.catalog,
                }
                .run(run_id, today)
                .await)
            }
            ping_referral_to_progres::FLOW => {
                let ping = self
                    .ping
                    .as_ref()
                    .context("flow ping-2.1 needs a [ping] section in the config")?;
                Ok(Ping21 {
                    primero: &self.primero,
                    ping,
                    store: self.store.as_ref(),
                    catalog: &self.catalog,
                }
                .run(run_id, today)
                .await)
            }
            dtp_referral_to_dtp::FLOW => {
                let dtp = self
                    .dtp
                    .as_ref()
                    .context("flow dtp-2.1 needs a [dtp] section in the config")?;
                Ok(Dtp21 {
                    primero: &self.primero,
                    dtp,
                    store: self.store.as_ref(),
                    catalog: &self.catalog,
                }
                .run(run_id, today)
                .await)
            }
            ping_decision_to_progres::FLOW => {
                let ping = self
                    .ping
                    .as_ref()
                    .context("flow ping-1.2 needs a [ping] section in the config")?;
                Ok(Ping12 {
                    ping,
                    primero: &self.primero,
                    store: self.store.as_ref(),
                    catalog: &self.catalog,
                }
                .run(run_id, today)
                .await)
            }
            ping_decision_to_primero::FLOW => {
                let ping = self
                    .ping
                    .as_ref()
                    .context("flow ping-2.2 needs a [ping] section in the config")?;
                Ok(Ping22 {
                    ping,
                    primero: &self.primero,
                    catalog: &self.catalog,
                }
                .run(run_id, today)
                .await)
            }
            dtp_decision_to_dtp::FLOW => {
                let dtp = self
                    .dtp
                    .as_ref()
                    .context("flow dtp-1.2 needs a [dtp] section in the config")?;
                Ok(Dtp12 {
                    dtp,
                    primero: &self.primero,
                    store: self.store.as_ref(),
                    catalog: &self.catalog,
                }
                .run(run_id, today)
                .await)
            }
            other => anyhow::bail!("unknown flow `{other}`; known flows: {}", FLOWS.join(", ")),
        }
    }
}

/// A new run id.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Today in the machine's time zone, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

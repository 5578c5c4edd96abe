//! Wiring: clients, job runtime and catalog for a configured deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::config::{partner_limits, BridgeConfig};
use crate::connectors::ping::{PingClient, PingConfig};
use crate::connectors::primero::{PrimeroClient, PrimeroConfig};
use crate::flows::case_scan::missing_cursor;
use crate::flows::dtp_decision_to_dtp::{self, Dtp12};
use crate::flows::dtp_referral_to_dtp::{self, Dtp21};
use crate::flows::ledger::{DeliveryPolicy, Ledger, Replay};
use crate::flows::outbound_referrals::read_cursor;
use crate::flows::ping_decision_to_primero::{self, Ping22};
use crate::flows::ping_decision_to_progres::{self, Ping12};
use crate::flows::ping_referral_to_primero::{self, Ping11};
use crate::flows::ping_referral_to_progres::{self, Ping21};
use crate::flows::RecordOutcome;
use crate::flows::RunReport;
use crate::inbox::InboxProcessor;
use crate::mappings::MappingSet;
use crate::runtime::reload::Catalog;
use crate::runtime::{JobRuntime, RuntimeConfig};
use crate::store::{
    Holder, Monitored, OpenMode, RecordRow, RunRow, SqliteStore, Store, Trigger, WriterLease,
};
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
    /// Design A with an inbox: processes stored messages (replays too).
    pub inbox: Option<Arc<InboxProcessor>>,
    /// Cursor flows: where the first run reads from when no cursor is
    /// stored (`[flows."<flow>"] initial_cursor`).
    pub initial_cursors: BTreeMap<String, DateTime<Utc>>,
    /// Dry run: read-only clients, a scratch copy of the state, and flows
    /// that map and report instead of writing.
    pub dry_run: bool,
    /// This process is the state database's only writer while it is held
    /// (`App::from_config`; an App built with `App::new` is given a store).
    writer: Option<WriterLease>,
}

/// How [`App::from_config_as`] wires the App.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Clients that write, the deployment's state database.
    Live,
    /// Writes nothing anywhere: read-only clients (a write is refused before
    /// it is sent), a scratch copy of the state database (deleted after),
    /// no inbox, and flows that report what they would write.
    DryRun,
}

/// Flows that read Primero from a cursor.
pub const CURSOR_FLOWS: &[&str] = &[
    ping_referral_to_progres::FLOW,
    dtp_referral_to_dtp::FLOW,
    ping_decision_to_progres::FLOW,
    dtp_decision_to_dtp::FLOW,
];

/// Flows fed by the inbox (design A): their dead letters are inbox messages.
pub const INBOX_FLOWS: &[&str] = &[
    crate::flows::dtp_referral_to_primero::FLOW,
    crate::flows::dtp_decision_to_primero::FLOW,
];

/// How a run ended, as stored: `ok` every record delivered, `partial` some
/// not, `stopped` cut short by shutdown, `aborted` stopped by a failure.
pub fn run_outcome(report: &RunReport) -> &'static str {
    if report.aborted.is_some() {
        "aborted"
    } else if report.stopped {
        "stopped"
    } else if report
        .records
        .iter()
        .all(|r| r.outcome.is_delivered() && r.acknowledged)
    {
        "ok"
    } else {
        "partial"
    }
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
            inbox: None,
            initial_cursors: BTreeMap::new(),
            dry_run: false,
            writer: None,
        })
    }

    /// The App of a deployment: opens its state database (`mode`: whether
    /// it may be created) and becomes its only writer, refusing to start
    /// while another process writes it.
    pub async fn from_config(
        config: &BridgeConfig,
        cache_dir: Option<PathBuf>,
        open: OpenMode,
    ) -> anyhow::Result<Self> {
        Self::from_config_as(config, cache_dir, Mode::Live, open).await
    }

    /// [`App::from_config`] in a [`Mode`]. A dry run works on a scratch copy
    /// of the state database and does not become its writer: it runs beside
    /// the service.
    pub async fn from_config_as(
        config: &BridgeConfig,
        cache_dir: Option<PathBuf>,
        mode: Mode,
        open: OpenMode,
    ) -> anyhow::Result<Self> {
        let dry_run = mode == Mode::DryRun;
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
        if let Some(n) = config.jobs.recycle_after_records {
            rc.limits.recycle_after_calls = n;
        }
        let mappings_dir = config.resolve(&config.jobs.mappings);
        let mappings = MappingSet::load_dir(&mappings_dir)?;
        if let Some(refusal) = mappings.placeholder_refusal() {
            if dry_run {
                // Nothing is written: a dry run may show what they would send.
                tracing::warn!("{refusal}");
                eprintln!("warning: {refusal}");
            } else if !config.jobs.allow_placeholders {
                anyhow::bail!("{}: key `jobs.mappings`: {refusal}", config.file.display());
            }
        }
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
            Some(state) if dry_run => Arc::new(Monitored::new(
                SqliteStore::scratch_copy_of(&config.resolve(&state.path)).await?,
            )),
            Some(state) => Arc::new(Monitored::new(
                SqliteStore::open(&config.resolve(&state.path), open).await?,
            )),
            None => Arc::new(Monitored::new(SqliteStore::in_memory().await?)),
        };
        // Before the slow part (compiling the jobs): a second process is
        // refused at once.
        let writer = if dry_run {
            None
        } else {
            Some(store.acquire_writer(&Holder::current()).await?)
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
        app.writer = writer;
        app.dtp = dtp;
        // `[retry]` and the per-partner limits (the Primero client takes them
        // through its config).
        if let (Some(client), Some(s)) = (app.ping.take(), &config.ping) {
            app.ping = Some(
                client
                    .with_retry(config.retry_policy())
                    .with_limits(partner_limits(s.max_in_flight, s.rate_per_sec)),
            );
        }
        if let (Some(client), Some(s)) = (app.dtp.take(), &config.dtp) {
            app.dtp = Some(
                client
                    .with_retry(config.retry_policy())
                    .with_limits(partner_limits(s.max_in_flight, s.rate_per_sec)),
            );
        }
        app.delivery = DeliveryPolicy {
            max_attempts: config.delivery.max_attempts.max(1),
        };
        app.record_concurrency = config.delivery.record_concurrency.max(1);
        app.initial_cursors = config.initial_cursors();
        if !config.jobs.allow_placeholders {
            // A hot reload that brings placeholders back is refused too.
            app.catalog.refuse_placeholders();
        }
        if dry_run {
            app.dry_run = true;
            app.primero = app.primero.read_only();
            app.ping = app.ping.take().map(PingClient::read_only);
            app.dtp = app
                .dtp
                .take()
                .map(crate::connectors::dtp::DtpClient::read_only);
            return Ok(app);
        }
        if config.inbox.is_some() {
            let settings = config.inbox_settings()?;
            let dispatcher = crate::inbox::Dispatcher::for_app(&app)?;
            app.inbox = Some(Arc::new(
                InboxProcessor::new(app.store.clone(), settings.sealer, Arc::new(dispatcher))
                    .with_max_attempts(app.delivery.max_attempts),
            ));
        }
        Ok(app)
    }

    /// Where a cursor flow reads from next: its stored cursor, else its
    /// initial cursor; an error saying what to set when it has neither.
    /// `None` for a flow that reads no cursor.
    pub async fn lower_bound(&self, flow: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        if !CURSOR_FLOWS.contains(&flow) {
            return Ok(None);
        }
        let stored = read_cursor(self.store.as_ref(), flow)
            .await
            .map_err(anyhow::Error::msg)?;
        match stored.or_else(|| self.initial_cursors.get(flow).copied()) {
            Some(at) => Ok(Some(at)),
            None => anyhow::bail!(missing_cursor(flow)),
        }
    }

    /// Run one flow once and keep its run and record outcomes in the store.
    pub async fn run_recorded(&self, flow: &str, trigger: Trigger) -> anyhow::Result<RunReport> {
        self.run_recorded_with(flow, trigger, &today(), None).await
    }

    /// [`App::run_recorded`] with the jobs' date given.
    pub async fn run_recorded_on(
        &self,
        flow: &str,
        trigger: Trigger,
        today: &str,
    ) -> anyhow::Result<RunReport> {
        self.run_recorded_with(flow, trigger, today, None).await
    }

    async fn run_recorded_with(
        &self,
        flow: &str,
        trigger: Trigger,
        today: &str,
        replay: Option<Replay>,
    ) -> anyhow::Result<RunReport> {
        anyhow::ensure!(
            FLOWS.contains(&flow),
            "unknown flow `{flow}`; known flows: {}",
            FLOWS.join(", ")
        );
        if replay.is_none() {
            // Refused before anything is recorded or read.
            self.lower_bound(flow).await?;
        }
        let run_id = new_run_id();
        let started = std::time::Instant::now();
        let mut row = RunRow {
            id: run_id.clone(),
            flow: flow.to_string(),
            trigger: trigger.as_str().to_string(),
            started_at: crate::store::now(),
            outcome: "running".into(),
            ..RunRow::default()
        };
        self.store.run_started(&row).await?;
        let ledger = Ledger::load(self.store.as_ref(), flow, self.delivery, replay).await?;
        let report = self.run_flow_in(flow, &run_id, today, &ledger).await?;
        let at = crate::store::now();
        let records: Vec<RecordRow> = report
            .records
            .iter()
            .map(|r| RecordRow {
                run_id: run_id.clone(),
                flow: flow.to_string(),
                source_id: r.source_id.clone(),
                target_id: r.outcome.target_id().map(str::to_string),
                status: r.outcome.label().replace(' ', "-"),
                attempt: ledger.attempt(&r.source_id),
                reason_code: r.outcome.reason_code().map(str::to_string),
                at: at.clone(),
            })
            .collect();
        let count = |f: fn(&RecordOutcome) -> bool| {
            report.records.iter().filter(|r| f(&r.outcome)).count() as i64
        };
        row.ended_at = Some(at);
        row.fetched = report.fetched as i64;
        row.delivered = count(RecordOutcome::is_delivered);
        row.held = count(|o| matches!(o, RecordOutcome::Held { .. }));
        row.skipped = count(|o| matches!(o, RecordOutcome::Skipped { .. }));
        row.failed = count(|o| matches!(o, RecordOutcome::Failed { .. }));
        row.dead_lettered = count(|o| matches!(o, RecordOutcome::DeadLettered { .. }));
        row.aborted_reason = report.aborted.clone();
        row.outcome = run_outcome(&report).into();
        self.store.run_finished(&row, &records).await?;
        let metrics = crate::telemetry::metrics();
        for r in &report.records {
            metrics.record(flow, r.outcome.label());
        }
        metrics.run_finished(flow, &row.outcome, started.elapsed().as_secs_f64());
        if let Ok(dead) = self.store.dead_letters(Some(flow)).await {
            metrics.set_dead_letter(flow, dead.len() as i64);
        }
        Ok(report)
    }

    /// Take dead-letter entries out and run their flows again for them: a
    /// pull flow finds its records still pending at the partner, a cursor
    /// flow reads from the entries' point without moving its cursor, an
    /// inbox message becomes pending again.
    pub async fn replay(&self, selection: ReplaySelection) -> anyhow::Result<Vec<RunReport>> {
        let entries = match selection {
            ReplaySelection::One(id) => match self.store.dead_letter_get(id).await? {
                Some(e) if e.replayed_at.is_none() => vec![e],
                Some(_) => anyhow::bail!("dead-letter entry {id} was already replayed"),
                None => anyhow::bail!("no dead-letter entry {id}"),
            },
            ReplaySelection::All => self.store.dead_letters(None).await?,
        };
        let mut by_flow: std::collections::BTreeMap<String, Vec<crate::store::DeadLetter>> =
            Default::default();
        for e in entries {
            by_flow.entry(e.flow.clone()).or_default().push(e);
        }
        let mut reports = Vec::new();
        for (flow, entries) in by_flow {
            for e in &entries {
                self.store.dead_letter_release(e.id).await?;
            }
            if INBOX_FLOWS.contains(&flow.as_str()) || flow == "inbox" {
                for e in &entries {
                    self.store.inbox_revive(&e.source_id).await?;
                }
                tracing::info!(flow = %flow, messages = entries.len(), "inbox messages pending again");
                if let Some(processor) = &self.inbox {
                    let summary = processor.process_pending(&today()).await?;
                    reports.extend(summary.messages.into_iter().filter_map(
                        |m| match m.disposition {
                            crate::inbox::Disposition::Done { report } => Some(report),
                            _ => None,
                        },
                    ));
                }
                continue;
            }
            let replay = CURSOR_FLOWS.contains(&flow.as_str()).then(|| Replay {
                since: entries
                    .iter()
                    .filter_map(|e| e.cursor_hint.as_deref())
                    .filter_map(|h| chrono::DateTime::parse_from_rfc3339(h).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .min(),
                only: entries.iter().map(|e| e.source_id.clone()).collect(),
            });
            reports.push(
                self.run_recorded_with(&flow, Trigger::Replay, &today(), replay)
                    .await?,
            );
        }
        Ok(reports)
    }

    /// Run one flow once (attempts and the dead letter apply; the run itself
    /// is not recorded: see [`App::run_recorded`]).
    pub async fn run_flow(
        &self,
        flow: &str,
        run_id: &str,
        today: &str,
    ) -> anyhow::Result<RunReport> {
        self.lower_bound(flow).await?;
        let ledger = Ledger::load(self.store.as_ref(), flow, self.delivery, None).await?;
        self.run_flow_in(flow, run_id, today, &ledger).await
    }

    async fn run_flow_in(
        &self,
        flow: &str,
        run_id: &str,
        today: &str,
        ledger: &Ledger<'_>,
    ) -> anyhow::Result<RunReport> {
        let stop = &self.stop;
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
                    ledger,
                    stop,
                    concurrency: self.record_concurrency,
                    dry_run: self.dry_run,
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
                    ledger,
                    stop,
                    concurrency: self.record_concurrency,
                    initial_cursor: self.initial_cursors.get(flow).copied(),
                    dry_run: self.dry_run,
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
                    ledger,
                    stop,
                    concurrency: self.record_concurrency,
                    initial_cursor: self.initial_cursors.get(flow).copied(),
                    dry_run: self.dry_run,
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
                    ledger,
                    stop,
                    initial_cursor: self.initial_cursors.get(flow).copied(),
                    dry_run: self.dry_run,
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
                    ledger,
                    stop,
                    dry_run: self.dry_run,
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
                    ledger,
                    stop,
                    initial_cursor: self.initial_cursors.get(flow).copied(),
                    dry_run: self.dry_run,
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

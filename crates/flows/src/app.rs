//! Wiring: clients, job runtime and catalog for a configured deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::case_scan::missing_cursor;
use crate::lease::{FlowLease, NotRun, Replica};
use crate::ledger::{DeliveryPolicy, Ledger, Replay};
use crate::outbound_referrals::read_cursor;
use crate::registry::{self, FlowRun, Intake};
use crate::RunReport;
use bridge_partners::dtp::DtpClient;
use bridge_partners::ping::{PingClient, PingConfig};
use bridge_partners::primero::{PrimeroClient, PrimeroConfig};
use bridge_runtime::reload::Catalog;
use bridge_runtime::JobRuntime;
use bridge_store::{Fenced, RunRow, Store, Trigger, WriterLease};
use tokio_util::sync::CancellationToken;

pub struct App {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<JobRuntime>,
    pub catalog: Arc<Catalog>,
    pub primero: PrimeroClient,
    pub ping: Option<PingClient>,
    /// Design A only.
    pub dtp: Option<DtpClient>,
    /// Attempts before a record goes to the dead letter.
    pub delivery: DeliveryPolicy,
    /// Records of one run worked on at once (partner calls are further
    /// bounded per partner by the clients).
    pub record_concurrency: usize,
    /// Cancelled on SIGTERM: flows finish the records in flight and stop.
    pub stop: CancellationToken,
    /// Design A with an inbox: processes stored messages (replays too).
    pub inbox: Option<Arc<dyn PendingMessages>>,
    /// Cursor flows: where the first run reads from when no cursor is
    /// stored (`[flows."<flow>"] initial_cursor`).
    pub initial_cursors: BTreeMap<String, DateTime<Utc>>,
    /// Dry run: read-only clients, a scratch copy of the state, and flows
    /// that map and report instead of writing.
    pub dry_run: bool,
    /// One run of a flow at a time across the scheduler and the console.
    pub gates: crate::gates::RunGates,
    /// This process as a replica: it runs a flow only while it holds the
    /// flow's lease in the state database.
    pub replica: Replica,
    /// This process is the state database's only writer while it is held
    /// (`bridge_service::build::from_config`; an App built with `App::new` is
    /// given a store).
    writer: Option<WriterLease>,
}

/// Processes the inbox's stored messages that are pending (the inbox crate's
/// processor): a replay of an inbox flow's dead letter makes them pending
/// again and has them processed at once.
#[async_trait::async_trait]
pub trait PendingMessages: Send + Sync {
    /// The reports of the messages handled to the end.
    async fn process_pending(&self, today: &str) -> anyhow::Result<Vec<RunReport>>;
}

/// How `bridge_service::build` wires the App.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Clients that write, the deployment's state database.
    Live,
    /// Writes nothing anywhere: read-only clients (a write is refused before
    /// it is sent), a scratch copy of the state database (deleted after),
    /// no inbox, and flows that report what they would write.
    DryRun,
}

/// How a run ended, as stored: `ok` every record delivered, `partial` some
/// not, `stopped` cut short by shutdown, `aborted` stopped by a failure.
pub fn run_outcome(report: &RunReport) -> &'static str {
    if report.aborted.is_some() {
        "aborted"
    } else if report.stopped {
        "stopped"
    } else if report.all_through() {
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
            gates: Default::default(),
            replica: Replica::default(),
            writer: None,
        })
    }

    /// Where a cursor flow reads from next: its stored cursor, else its
    /// initial cursor; an error saying what to set when it has neither.
    /// `None` for a flow that reads no cursor.
    pub async fn lower_bound(&self, flow: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        if !registry::get(flow).is_some_and(|f| f.reads_cursor()) {
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

    /// [`App::run_recorded`] for the schedule slot `due`: not run when a run
    /// of the flow (on any replica) already started at or after `due`, so
    /// replicas whose clocks fire the same slot run it once
    /// ([`NotRun::AlreadyRan`]).
    pub async fn run_scheduled(
        &self,
        flow: &str,
        trigger: Trigger,
        due: DateTime<Utc>,
    ) -> anyhow::Result<RunReport> {
        self.run_recorded_with(flow, trigger, &today(), Some(due))
            .await
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
        due: Option<DateTime<Utc>>,
    ) -> anyhow::Result<RunReport> {
        anyhow::ensure!(
            registry::get(flow).is_some_and(|f| f.is_scheduled()),
            unknown_flow(flow)
        );
        // Refused before anything is recorded or read.
        self.lower_bound(flow).await?;
        let lease = self.take_lease(flow).await?;
        if let Some(due) = due {
            if let Err(e) = self.not_run_yet(flow, due).await {
                lease.release().await;
                return Err(e);
            }
        }
        let result = self
            .run_recorded_under(flow, trigger, today, None, &lease)
            .await;
        lease.release().await;
        result
    }

    /// Take `flow`'s lease for this replica.
    async fn take_lease(&self, flow: &str) -> anyhow::Result<FlowLease> {
        FlowLease::take(self.store.clone(), &self.replica, flow, &self.stop).await
    }

    /// [`NotRun::AlreadyRan`] when a run of `flow` started at or after `due`
    /// (checked under the flow's lease, so it sees every replica's runs).
    async fn not_run_yet(&self, flow: &str, due: DateTime<Utc>) -> anyhow::Result<()> {
        let Some(started) = self.store.last_run_started(flow).await? else {
            return Ok(());
        };
        let ran = chrono::DateTime::parse_from_rfc3339(&started)
            .is_ok_and(|at| at.with_timezone(&Utc) >= due);
        anyhow::ensure!(
            !ran,
            NotRun::AlreadyRan {
                flow: flow.to_string(),
                due: bridge_store::stamp(due),
                started,
            }
        );
        Ok(())
    }

    async fn run_recorded_under(
        &self,
        flow: &str,
        trigger: Trigger,
        today: &str,
        replay: Option<Replay>,
        lease: &FlowLease,
    ) -> anyhow::Result<RunReport> {
        // This run holds the flow's lease, so any other run of the flow
        // still `running` is over (its replica died or lost the lease): say
        // so before this one starts.
        self.store.interrupt_flow_runs(flow).await?;
        let fenced = Fenced::new(self.store.clone(), lease.fence());
        let run_id = new_run_id();
        let started = std::time::Instant::now();
        let mut row = RunRow {
            id: run_id.clone(),
            flow: flow.to_string(),
            trigger: trigger.as_str().to_string(),
            started_at: bridge_store::now(),
            outcome: "running".into(),
            lease_token: Some(lease.token()),
            ..RunRow::default()
        };
        self.store.run_started(&row).await?;
        let ledger = Ledger::load(&fenced, flow, self.delivery, replay).await?;
        // The records go to the store while the run goes (record_stream).
        let (stream, rows, done) = crate::record_stream::channel();
        let run = async {
            let mut report = self
                .run_flow_in(
                    flow,
                    &run_id,
                    today,
                    &ledger,
                    (&fenced, (lease.stop(), lease.holding()), Some(stream)),
                )
                .await;
            if let Ok(report) = &mut report {
                report.end_stream();
            }
            done.notify_one();
            report
        };
        let writer = crate::record_stream::write_records(
            self.store.as_ref(),
            (&run_id, flow),
            &ledger,
            rows,
        );
        let ((report, used), written) =
            tokio::join!(bridge_runtime::reload::recording_versions(run), writer);
        let mut report = report?;
        if lease.lost() && report.aborted.is_none() {
            report.aborted = Some(format!(
                "the lease of flow {flow} was lost: another replica took it over or the state \
                 database could not confirm it; records not started are left to the next run"
            ));
        }
        row.job_hash = (!used.job_hashes.is_empty()).then(|| used.job_hashes.join(","));
        row.mappings_hash = used.mappings_hash;
        row.ended_at = Some(bridge_store::now());
        row.fetched = report.fetched as i64;
        row.delivered = report.delivered() as i64;
        row.held = report.count("held") as i64;
        row.skipped = report.count("skipped") as i64;
        row.failed = report.count("failed") as i64;
        row.dead_lettered = report.count("dead-lettered") as i64;
        row.aborted_reason = report.aborted.clone();
        row.outcome = run_outcome(&report).into();
        self.store.run_finished(&row, &[]).await?;
        written?;
        let metrics = bridge_telemetry::metrics();
        metrics.run_finished(flow, &row.outcome, started.elapsed().as_secs_f64());
        metrics.set_held(flow, row.held);
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        if report.aborted.is_none() {
            metrics.set_last_success(flow, now);
        }
        if row.delivered > 0 {
            metrics.set_last_delivered(flow, now);
        }
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
        let mut by_flow: std::collections::BTreeMap<String, Vec<bridge_store::DeadLetter>> =
            Default::default();
        for e in entries {
            by_flow.entry(e.flow.clone()).or_default().push(e);
        }
        let mut reports = Vec::new();
        for (flow, entries) in by_flow {
            if registry::pushed_names().contains(&flow.as_str()) || flow == "inbox" {
                for e in &entries {
                    self.store.dead_letter_release(e.id).await?;
                    self.store.inbox_revive(&e.source_id).await?;
                }
                tracing::info!(flow = %flow, messages = entries.len(), "inbox messages pending again");
                if let Some(processor) = &self.inbox {
                    reports.extend(processor.process_pending(&today()).await?);
                }
                continue;
            }
            // The flow's lease first: entries are taken out of the dead letter
            // only when this replica will run them.
            let lease = self.take_lease(&flow).await?;
            let replay = registry::cursor_names()
                .contains(&flow.as_str())
                .then(|| Replay {
                    since: entries
                        .iter()
                        .filter_map(|e| e.cursor_hint.as_deref())
                        .filter_map(|h| chrono::DateTime::parse_from_rfc3339(h).ok())
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .min(),
                    only: entries.iter().map(|e| e.source_id.clone()).collect(),
                });
            let ran = async {
                for e in &entries {
                    self.store.dead_letter_release(e.id).await?;
                }
                self.run_recorded_under(&flow, Trigger::Replay, &today(), replay, &lease)
                    .await
            }
            .await;
            lease.release().await;
            reports.push(ran?);
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
        let lease = self.take_lease(flow).await?;
        let fenced = Fenced::new(self.store.clone(), lease.fence());
        let result = async {
            let ledger = Ledger::load(&fenced, flow, self.delivery, None).await?;
            let held = (lease.stop(), lease.holding());
            self.run_flow_in(flow, run_id, today, &ledger, (&fenced, held, None))
                .await
        }
        .await;
        lease.release().await;
        result
    }

    async fn run_flow_in(
        &self,
        flow: &str,
        run_id: &str,
        today: &str,
        ledger: &Ledger<'_>,
        (store, (stop, holding), records): (
            &dyn Store,
            (&CancellationToken, &crate::lease::Holding),
            Option<crate::record_stream::RecordStream>,
        ),
    ) -> anyhow::Result<RunReport> {
        let spec = registry::get(flow)
            .filter(|f| f.is_scheduled())
            .with_context(|| unknown_flow(flow))?;
        let run = FlowRun {
            run_id,
            today,
            ledger,
            store,
            stop,
            holding,
            records,
        };
        match spec.intake {
            Intake::Cursor(run_fn) | Intake::Pull(run_fn) => run_fn(self, run).await,
            Intake::Pushed(..) => anyhow::bail!(unknown_flow(flow)),
        }
    }

    /// The PING client, for a flow that needs it.
    pub fn ping_for(&self, flow: &str) -> anyhow::Result<&PingClient> {
        self.ping
            .as_ref()
            .with_context(|| format!("flow {flow} needs a [ping] section in the config"))
    }

    /// The DTP client, for a flow that needs it.
    pub fn dtp_for(&self, flow: &str) -> anyhow::Result<&DtpClient> {
        self.dtp
            .as_ref()
            .with_context(|| format!("flow {flow} needs a [dtp] section in the config"))
    }

    /// This process is the state database's only writer while the App lives
    /// (see `bridge_service::build`).
    pub fn hold_writer(&mut self, lease: WriterLease) {
        self.writer = Some(lease);
    }
}

fn unknown_flow(flow: &str) -> String {
    format!(
        "unknown flow `{flow}`; known flows: {}",
        registry::scheduled_names().join(", ")
    )
}

/// A new run id.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Today in the machine's time zone, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

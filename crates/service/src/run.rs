//! `bridge run`: the scheduler, the inbox, hot reload and the metrics
//! endpoint in one process, with a graceful stop.

use std::future::{Future, IntoFuture as _};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::schedule::{Clock, Entry, FlowRunner, Scheduler};
use crate::config::BridgeConfig;
use crate::inbox::BoundInbox;
use bridge_flows::app::App;
use bridge_flows::lease::NotRun;
use bridge_flows::RunReport;
use bridge_inbox::INBOX_PATH;
use bridge_store::{OpenMode, Store, Trigger};
use bridge_telemetry::http::Health;

/// How often `bridge run` checks its state database (still the file it
/// opened; no failure since the last successful write).
const STORE_CHECK: Duration = Duration::from_secs(1);

/// Keep `/readyz` in step with the state database: not ready, with its
/// reason code, while it is deleted, replaced or failing.
async fn watch_store(store: Arc<dyn Store>, health: Health, replica: String) {
    let mut last = None;
    loop {
        if let Ok(leases) = store.leases().await {
            health.set_cluster(cluster_view(&replica, &leases));
        }
        let checked = store.verify().await;
        let fault = store.fault();
        if fault != last {
            match (fault, &checked) {
                (Some(code), Err(e)) => {
                    tracing::error!(code, error = %e, "state database unusable: not ready")
                }
                (Some(code), Ok(())) => {
                    tracing::error!(code, "state database failing: not ready")
                }
                (None, _) => tracing::info!("state database works again"),
            }
        }
        health.set_store_fault(fault);
        last = fault;
        tokio::time::sleep(STORE_CHECK).await;
    }
}

/// `/readyz`'s `cluster`: this replica, and each lease with its holder and
/// whether it is live now.
fn cluster_view(replica: &str, leases: &[bridge_store::Lease]) -> serde_json::Value {
    let now = bridge_store::now();
    serde_json::json!({
        "replica": replica,
        "leases": leases.iter().map(|l| serde_json::json!({
            "name": l.name,
            "owner": l.owner,
            "token": l.token,
            "expires_at": l.expires_at,
            "live": l.live_at(&now),
            "mine": l.owner == replica,
        })).collect::<Vec<_>>(),
    })
}

/// How `bridge run` runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Precompiled-component cache folder.
    pub cache_dir: Option<PathBuf>,
    /// Run every scheduled flow once, then return.
    pub once: bool,
    /// Create the state database when it does not exist (`--init`).
    pub init: bool,
}

/// How the service ended.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// `--once`: the reports of the runs, in schedule order.
    pub reports: Vec<RunReport>,
    /// `--once`: flows whose run could not start, with the reason.
    pub failed: Vec<(String, String)>,
}

impl RunSummary {
    /// Every run started and none stopped early.
    pub fn all_ran(&self) -> bool {
        self.failed.is_empty() && self.reports.iter().all(|r| r.aborted.is_none())
    }
}

/// The App as the scheduler's runner: every run is recorded.
pub struct AppRunner {
    pub app: Arc<App>,
}

#[async_trait]
impl FlowRunner for AppRunner {
    async fn run(&self, flow: &str, trigger: Trigger, due: Option<DateTime<Utc>>) {
        let span = tracing::info_span!("scheduled_run", flow, trigger = trigger.as_str());
        async {
            let started = std::time::Instant::now();
            let result = match due {
                Some(due) => self.app.run_scheduled(flow, trigger, due).await,
                None => self.app.run_recorded(flow, trigger).await,
            };
            match result {
                // `run_recorded` updates the metrics, dead-letter size included.
                Ok(report) => log_report(&report, trigger, started.elapsed()),
                // Another replica runs it: not this replica's to report.
                Err(e) if e.downcast_ref::<NotRun>().is_some() => {
                    tracing::info!(reason = %e, "not run on this replica")
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "run could not start")
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn last_started(&self, flow: &str) -> Option<DateTime<Utc>> {
        match self.app.store.last_run_started(flow).await {
            Ok(Some(raw)) => match DateTime::parse_from_rfc3339(&raw) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => {
                    tracing::warn!(flow, "last run start is not an RFC 3339 date-time");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(flow, error = %e, "cannot read the last run start");
                None
            }
        }
    }

    fn gate(&self, flow: &str) -> bridge_flows::gates::Gate {
        self.app.gates.gate(flow)
    }
}

/// At start, the per-flow "last" gauges from the recorded runs, so an
/// alert on "nothing delivered for 6 h" survives a restart.
async fn restore_run_gauges(app: &App, flow: &str) {
    let metrics = bridge_telemetry::metrics();
    let Ok(runs) = app.store.runs(Some(flow), 500).await else {
        return;
    };
    let seconds = |r: &bridge_store::RunRow| {
        r.ended_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis() as f64 / 1000.0)
    };
    // Newest first.
    if let Some(t) = runs.iter().filter(|r| r.got_through()).find_map(seconds) {
        metrics.set_last_success(flow, t);
    }
    if let Some(t) = runs.iter().filter(|r| r.delivered > 0).find_map(seconds) {
        metrics.set_last_delivered(flow, t);
    }
    if let Some(last) = runs.iter().find(|r| r.ended_at.is_some()) {
        metrics.set_held(flow, last.held);
    }
}

/// `bridge_dead_letter_size{flow}` from the store.
async fn update_dead_letter_gauge(app: &App, flow: &str) {
    match app.store.dead_letters(Some(flow)).await {
        Ok(entries) => bridge_telemetry::metrics().set_dead_letter(flow, entries.len() as i64),
        Err(e) => tracing::warn!(flow, error = %e, "cannot count the dead letter"),
    }
}

/// Counts and system ids only: never record content.
fn log_report(report: &RunReport, trigger: Trigger, took: std::time::Duration) {
    let failed = report.count("failed");
    let held = report.count("held");
    let duration_ms = took.as_millis() as u64;
    let dead = report.count("dead-lettered");
    let delivered = report
        .records
        .iter()
        .filter(|r| r.outcome.is_delivered())
        .count();
    if let Some(reason) = &report.aborted {
        tracing::warn!(
            flow = %report.flow,
            run_id = %report.run_id,
            trigger = trigger.as_str(),
            fetched = report.fetched,
            reason = %reason,
            duration_ms,
            "run stopped early"
        );
    } else {
        tracing::info!(
            flow = %report.flow,
            run_id = %report.run_id,
            trigger = trigger.as_str(),
            fetched = report.fetched,
            delivered,
            held,
            failed,
            dead_lettered = dead,
            stopped = report.stopped,
            duration_ms,
            "run finished"
        );
    }
}

/// Everything `bridge run` checks before it starts anything: a schedule
/// that parses, sane limits, a state database, and the inbox secrets when
/// there is an inbox.
fn preflight(config: &BridgeConfig) -> anyhow::Result<Preflight> {
    let entries = config
        .schedules()?
        .into_iter()
        .map(|(flow, schedule)| Entry { flow, schedule })
        .collect::<Vec<_>>();
    if let Some(e) = config
        .limit_problems()
        .into_iter()
        .chain(config.service_problems())
        .next()
    {
        return Err(e.into());
    }
    anyhow::ensure!(
        config.state.is_some(),
        "{}: `bridge run` needs a [state] section: runs, cursors and inbox messages must survive a restart",
        config.file.display()
    );
    // Secrets first: refuse to start without a seal key before doing any work.
    let inbox = match &config.inbox {
        Some(_) => Some(config.inbox_settings()?),
        None => None,
    };
    let alerts = config.alert_settings()?;
    let console = config.console_settings()?;
    Ok(Preflight {
        entries,
        inbox,
        alerts,
        console,
    })
}

/// What `bridge run` needs before it starts.
struct Preflight {
    entries: Vec<Entry>,
    inbox: Option<crate::config::InboxSettings>,
    alerts: Option<crate::config::AlertSettings>,
    console: Option<bridge_console::ConsoleSettings>,
}

/// The App for a config (`build::from_config` applies `[delivery]` and takes
/// the writer lease).
pub async fn open_app(
    config: &BridgeConfig,
    cache_dir: Option<PathBuf>,
    mode: OpenMode,
) -> anyhow::Result<App> {
    crate::build::from_config(config, cache_dir, mode).await
}

/// Run the service until `shutdown` completes (or, with `once`, until every
/// scheduled flow ran once).
pub async fn run(
    config: &BridgeConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunSummary> {
    let Preflight {
        entries,
        inbox,
        alerts,
        console,
    } = preflight(config)?;
    let app = open_app(
        config,
        options.cache_dir.clone(),
        OpenMode::from_init(options.init),
    )
    .await?;
    // A scheduled cursor flow without a lower bound would send every
    // historic record: refuse to start, naming each.
    let mut unbounded = Vec::new();
    for entry in &entries {
        if let Err(e) = app.lower_bound(&entry.flow).await {
            unbounded.push(format!("{e:#}"));
        }
    }
    anyhow::ensure!(
        unbounded.is_empty(),
        "{}: {}",
        config.file.display(),
        unbounded.join("\n")
    );
    let interrupted = app
        .store
        .interrupt_running()
        .await
        .context("cannot mark the runs a previous process left unfinished")?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "runs left unfinished by a previous process are marked interrupted"
        );
    }
    let app = Arc::new(app);
    let alerts = alerts
        .map(|settings| crate::alerts::Dispatcher::new(settings, app.store.clone()))
        .transpose()?;
    if options.once {
        let summary = run_once(app, entries, shutdown).await;
        if let Some(alerts) = alerts {
            // What the runs raised, once; the rest waits for the next start.
            alerts.deliver_due().await;
        }
        return summary;
    }
    if entries.is_empty() && inbox.is_none() {
        tracing::warn!("nothing to do: no [schedule] entries and no [inbox]");
    }

    let mut stdout_lines = Vec::new();

    // Metrics and health: up first, not ready until everything started.
    let health = Health::new().watching_partners();
    bridge_telemetry::metrics().set_replica(&app.replica.id);
    let store_watch = tokio::spawn(watch_store(
        app.store.clone(),
        health.clone(),
        app.replica.id.clone(),
    ));
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (metrics.listen)",
                config.metrics.listen
            )
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    let metrics_stop = CancellationToken::new();
    let metrics_task = tokio::spawn(
        axum::serve(
            metrics_listener,
            bridge_telemetry::http::router(health.clone()),
        )
        .with_graceful_shutdown(metrics_stop.clone().cancelled_owned())
        .into_future(),
    );
    stdout_lines.push(format!(
        "metrics listening on http://{metrics_addr}/metrics"
    ));
    tracing::info!(addr = %metrics_addr, "metrics listening");
    for flow in bridge_flows::registry::scheduled_names() {
        update_dead_letter_gauge(&app, flow).await;
        restore_run_gauges(&app, flow).await;
    }
    let mut partners = vec!["primero"];
    if app.ping.is_some() {
        partners.push("ping");
    }
    bridge_telemetry::metrics()
        .start_at_zero(&partners, &["store-error", "store-full", "store-replaced"]);

    // Audit retention: now, then once a day.
    let retention = config
        .audit
        .retain_days
        .map(|days| tokio::spawn(crate::retention::run(app.store.clone(), days)));

    // Hot reload of jobs and mappings.
    let reload = (config.jobs.reload_secs > 0).then(|| {
        app.catalog
            .watch(Duration::from_secs(config.jobs.reload_secs))
    });

    // The inbox, when configured.
    let inbox_stop = CancellationToken::new();
    let mut inbox_task = match inbox {
        Some(settings) => {
            let inbox = BoundInbox::bind(&app, settings, None).await?;
            let addr = inbox.addr;
            stdout_lines.push(format!("inbox listening on http://{addr}{INBOX_PATH}"));
            tracing::info!(%addr, "inbox listening");
            Some(tokio::spawn(
                inbox.serve(inbox_stop.clone().cancelled_owned()),
            ))
        }
        None => None,
    };

    // The operator console, when configured.
    let console_stop = CancellationToken::new();
    let console_task = match console {
        Some(settings) => {
            let schedule = entries
                .iter()
                .map(|e| bridge_console::ScheduledFlow {
                    flow: e.flow.clone(),
                    expression: config
                        .schedule
                        .get(&e.flow)
                        .map(|x| x.get_ref().clone())
                        .unwrap_or_default(),
                    schedule: e.schedule.clone(),
                })
                .collect();
            let console = bridge_console::Console::new(
                settings,
                bridge_console::Service {
                    app: app.clone(),
                    schedule,
                },
            );
            let bound = bridge_console::BoundConsole::bind(console).await?;
            let addr = bound.addr;
            stdout_lines.push(format!("console listening on http://{addr}/"));
            tracing::info!(%addr, "console listening");
            Some(tokio::spawn(
                bound.serve(console_stop.clone().cancelled_owned()),
            ))
        }
        None => None,
    };

    // Alerts to the operator's webhook.
    let alerts_stop = CancellationToken::new();
    let alerts_task = alerts.map(|a| a.spawn(alerts_stop.clone()));

    // The scheduler (missed runs start right away).
    let flows: Vec<String> = entries.iter().map(|e| e.flow.clone()).collect();
    let scheduler = Scheduler::start(
        entries,
        Arc::new(AppRunner { app: app.clone() }),
        Clock::System,
    )
    .await;

    // Tests and supervisors read these lines.
    let mut out = std::io::stdout().lock();
    for line in &stdout_lines {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "bridge running: scheduled flows: {}",
        if flows.is_empty() {
            "none".to_string()
        } else {
            flows.join(", ")
        }
    )?;
    out.flush()?;
    drop(out);
    health.set_ready(true);
    tracing::info!(flows = %flows.join(","), "bridge running");

    // Until told to stop, or the inbox fails.
    let mut inbox_error = None;
    tokio::select! {
        _ = shutdown => {}
        ended = async {
            match inbox_task.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => {
            inbox_task = None;
            inbox_error = Some(match ended {
                Ok(Ok(())) => anyhow::anyhow!("the inbox stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e).context("the inbox failed"),
                Err(e) => anyhow::anyhow!("the inbox task failed: {e}"),
            });
        }
    }

    tracing::info!(
        running = scheduler.running(),
        "stopping: no new runs or messages; finishing the records in flight"
    );
    health.set_not_ready("shutting down");
    // Flows check this between records.
    app.stop.cancel();
    inbox_stop.cancel();
    scheduler.shutdown().await;
    if let Some(task) = inbox_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the inbox ended with an error"),
            Err(e) => tracing::error!(error = %e, "the inbox task failed"),
        }
    }
    if let Some(reload) = reload {
        reload.abort();
    }
    if let Some(retention) = retention {
        retention.abort();
    }
    alerts_stop.cancel();
    if let Some(task) = alerts_task {
        let _ = task.await;
    }
    console_stop.cancel();
    if let Some(task) = console_task {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "the console ended with an error");
        }
    }
    store_watch.abort();
    metrics_stop.cancel();
    if let Ok(Err(e)) = metrics_task.await {
        tracing::warn!(error = %e, "the metrics endpoint ended with an error");
    }
    tracing::info!("bridge stopped");
    println!("bridge stopped");
    match inbox_error {
        Some(e) => Err(e),
        None => Ok(RunSummary::default()),
    }
}

/// `--once`: each scheduled flow once, in turn; a stop signal lets the run
/// in flight finish its records and skips the rest.
async fn run_once(
    app: Arc<App>,
    entries: Vec<Entry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunSummary> {
    let stop = app.stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let mut summary = RunSummary::default();
    for entry in entries {
        if app.stop.is_cancelled() {
            break;
        }
        let started = std::time::Instant::now();
        match app.run_recorded(&entry.flow, Trigger::Schedule).await {
            Ok(report) => {
                log_report(&report, Trigger::Schedule, started.elapsed());
                summary.reports.push(report);
            }
            Err(e) => {
                tracing::error!(flow = %entry.flow, error = %format!("{e:#}"), "run could not start");
                summary.failed.push((entry.flow, format!("{e:#}")));
            }
        }
    }
    watcher.abort();
    Ok(summary)
}

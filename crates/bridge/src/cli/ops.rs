//! Operator commands: `bridge runs`, `bridge dead-letter`, `bridge cursor`,
//! `bridge config check`. Each takes the deployment's `--config`; the
//! read-only ones open only its state database.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use bridge_flows::app::ReplaySelection;
use bridge_flows::outbound_referrals::format_cursor;
use bridge_flows::registry;
use bridge_service::config::BridgeConfig;
use bridge_store::{Holder, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The deployment's bridge.toml (its [state] database is read).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Only this flow's runs.
    #[arg(long)]
    flow: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    limit: i64,
    #[command(subcommand)]
    command: Option<RunsCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// One run and the outcome of each of its records.
    Show { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// Records waiting for an operator, oldest first.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take entries out of the dead letter and run their flows for them again.
    Replay {
        /// The entry's id (see `bridge dead-letter list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every active entry.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CursorCommand {
    /// Where each flow (or one flow) reads from next.
    Show {
        flow: Option<String>,
        #[arg(long)]
        config: PathBuf,
    },
    /// Move a flow's cursor (RFC 3339 date-time, e.g. 2025-06-01T00:00:00Z).
    Set {
        flow: String,
        timestamp: String,
        #[arg(long)]
        config: PathBuf,
        /// Create the state database when it does not exist (a new
        /// deployment that should start reading from this point).
        #[arg(long)]
        init: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a bridge.toml without starting anything: every problem is listed.
    Check { file: PathBuf },
}

/// The state database a config names (`Init`: create it when missing): its
/// SQLite file or PostgreSQL database. Reading needs no lease: these
/// commands work while the service runs.
pub(super) async fn open_store(config: &Path, mode: OpenMode) -> anyhow::Result<Arc<dyn Store>> {
    let config = BridgeConfig::parse(config)?;
    bridge_service::build::open_state(&config, mode)
        .await?
        .with_context(|| {
            format!(
                "{}: no [state] section: this deployment keeps no runs, cursors or dead letter",
                config.file.display()
            )
        })
}

/// The design of the deployment a config names (its mapping folder's
/// `deployment.toml`).
fn deployment_design(config: &Path) -> anyhow::Result<String> {
    let config = BridgeConfig::parse(config)?;
    let folder = config.resolve(&config.jobs.mappings);
    let set = bridge_mappings::MappingSet::load_dir(&folder)
        .with_context(|| format!("{}: key `jobs.mappings`", config.file.display()))?;
    Ok(set.deployment.design.clone())
}

fn known_flow(flow: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        registry::scheduled_names().contains(&flow),
        "unknown flow `{flow}`; known flows: {}",
        registry::scheduled_names().join(", ")
    );
    Ok(())
}

fn dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let config = args
        .config
        .as_deref()
        .context("--config <bridge.toml> is required")?;
    let store = open_store(config, OpenMode::Existing).await?;
    match args.command {
        None => {
            if let Some(flow) = &args.flow {
                known_flow(flow)?;
            }
            let runs = store.runs(args.flow.as_deref(), args.limit.max(1)).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(ExitCode::SUCCESS);
            }
            if runs.is_empty() {
                println!("no runs");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<9}  {:<9}  {:<24}  {:<11}  {:>7}  {:>9}  {:>6}  {:>6}",
                "run",
                "flow",
                "trigger",
                "started",
                "outcome",
                "fetched",
                "delivered",
                "failed",
                "dead"
            );
            for r in runs {
                println!(
                    "{:<36}  {:<9}  {:<9}  {:<24}  {:<11}  {:>7}  {:>9}  {:>6}  {:>6}",
                    r.id,
                    r.flow,
                    r.trigger,
                    r.started_at,
                    r.outcome,
                    r.fetched,
                    r.delivered,
                    r.failed,
                    r.dead_lettered
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsCommand::Show { id }) => {
            let run = store
                .run(&id)
                .await?
                .with_context(|| format!("no run `{id}`"))?;
            let records = store.run_records(&id).await?;
            if args.json {
                let value = serde_json::json!({ "run": run, "records": records });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("run      {}", run.id);
            println!("flow     {}", run.flow);
            println!("trigger  {}", run.trigger);
            println!("started  {}", run.started_at);
            println!("ended    {}", dash(&run.ended_at));
            println!("outcome  {}", run.outcome);
            println!("job      sha256 {}", dash(&run.job_hash));
            println!("mappings {}", dash(&run.mappings_hash));
            if let Some(token) = run.lease_token {
                println!("lease    token {token}");
            }
            if let Some(why) = &run.aborted_reason {
                println!("stopped  {why}");
            }
            println!(
                "counts   fetched {}  delivered {}  held {}  skipped {}  failed {}  dead-lettered {}",
                run.fetched, run.delivered, run.held, run.skipped, run.failed, run.dead_lettered
            );
            if records.is_empty() {
                println!("no record outcomes");
            } else {
                println!(
                    "\n{:<40}  {:<16}  {:<40}  {:>7}  reason",
                    "source", "status", "target", "attempt"
                );
                for r in records {
                    println!(
                        "{:<40}  {:<16}  {:<40}  {:>7}  {}",
                        r.source_id,
                        r.status,
                        dash(&r.target_id),
                        r.attempt,
                        r.why().as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn dead_letter(
    cmd: DeadLetterCommand,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLetterCommand::List { config, flow, json } => {
            if let Some(flow) = &flow {
                known_flow(flow)?;
            }
            let store = open_store(&config, OpenMode::Existing).await?;
            let entries = store.dead_letters(flow.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(ExitCode::SUCCESS);
            }
            if entries.is_empty() {
                println!("the dead letter is empty");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:>6}  {:<9}  {:<40}  {:<24}  {:>8}  {:<24}  reason",
                "id", "flow", "source", "code", "attempts", "since"
            );
            for e in entries {
                println!(
                    "{:>6}  {:<9}  {:<40}  {:<24}  {:>8}  {:<24}  {}",
                    e.id, e.flow, e.source_id, e.reason_code, e.attempts, e.created_at, e.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterCommand::Replay { id, all, config } => {
            let config = BridgeConfig::load(&config)?;
            let selection = match (id, all) {
                (Some(id), false) => ReplaySelection::One(id),
                (None, true) => ReplaySelection::All,
                _ => anyhow::bail!("give an entry id or --all"),
            };
            let app = bridge_service::run::open_app(&config, cache_dir, OpenMode::Existing).await?;
            let pending = match selection {
                ReplaySelection::One(id) => {
                    let entry = app
                        .store
                        .dead_letter_get(id)
                        .await?
                        .with_context(|| format!("no dead-letter entry {id}"))?;
                    anyhow::ensure!(
                        entry.replayed_at.is_none(),
                        "dead-letter entry {id} was already replayed at {}",
                        dash(&entry.replayed_at)
                    );
                    1
                }
                ReplaySelection::All => app.store.dead_letters(None).await?.len(),
            };
            if pending == 0 {
                println!("the dead letter is empty: nothing to replay");
                return Ok(ExitCode::SUCCESS);
            }
            let progress = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message(format!("replaying {pending} dead-letter entr(y/ies)"));
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                bar
            });
            let result = app.replay(selection).await;
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            let reports = result?;
            for report in &reports {
                print!("{report}");
            }
            println!("replayed {pending} entr(y/ies) in {} run(s)", reports.len());
            Ok(if reports.iter().all(|r| r.aborted.is_none()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

pub async fn cursor(cmd: CursorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CursorCommand::Show { flow, config } => {
            let flows: Vec<&str> = match &flow {
                Some(f) => {
                    known_flow(f)?;
                    vec![f.as_str()]
                }
                None => registry::scheduled_names(),
            };
            let store = open_store(&config, OpenMode::Existing).await?;
            for f in flows {
                let value = store.cursor(f).await?;
                println!("{f:<9}  {}", value.as_deref().unwrap_or("(none)"));
            }
            Ok(ExitCode::SUCCESS)
        }
        CursorCommand::Set {
            flow,
            timestamp,
            config,
            init,
        } => {
            // Unknown or cursorless flows first (the flow's own design);
            // the deployment's design once the store is known good.
            let own = registry::get(&flow).map_or("ping", |f| f.design.as_str());
            if let Some(refusal) = registry::cursor_move_refusal(&flow, own) {
                anyhow::bail!("{refusal}");
            }
            let at: DateTime<Utc> = DateTime::parse_from_rfc3339(timestamp.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "`{timestamp}` is not an RFC 3339 date-time, e.g. 2025-06-01T00:00:00Z"
                    )
                })?;
            if at > Utc::now() {
                eprintln!(
                    "warning: {} is in the future: records changed before then will not be read",
                    format_cursor(at)
                );
            }
            let store = open_store(&config, OpenMode::from_init(init)).await?;
            let design = deployment_design(&config)?;
            if let Some(refusal) = registry::cursor_move_refusal(&flow, &design) {
                anyhow::bail!("{refusal}");
            }
            // A writer like the service: refused while it runs (SQLite).
            let _writer = store.acquire_writer(&Holder::current()).await?;
            // Replicas (PostgreSQL): the flow's lease, so no replica's run of
            // it is going or starts until the cursor is moved.
            let replica = bridge_flows::lease::Replica::default();
            let stop = tokio_util::sync::CancellationToken::new();
            let lease = bridge_flows::lease::FlowLease::take(store.clone(), &replica, &flow, &stop)
                .await
                .map_err(|e| anyhow::anyhow!("cursor of {flow} not moved: {e:#}"))?;
            let moved = async {
                let old = store.cursor(&flow).await?;
                let new = format_cursor(at);
                store.set_cursor_fenced(&lease.fence(), &flow, &new).await?;
                Ok::<_, bridge_store::StoreError>((old, new))
            }
            .await;
            lease.release().await;
            let (old, new) = moved?;
            println!(
                "cursor of {flow}: {} -> {new}",
                old.as_deref().unwrap_or("(none)")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn config(cmd: ConfigCommand, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => {
            let report = bridge_service::check::check_config_and_jobs(&file, cache_dir).await;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if report.ok() {
                println!("{}", report.summary);
                return Ok(ExitCode::SUCCESS);
            }
            for p in &report.problems {
                println!("error: {p}");
            }
            println!("{} problem(s) found", report.problems.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

//! The `bridge` command.

mod alerts;
mod approve;
mod audit;
#[cfg(feature = "dev")]
mod bench;
mod console;
#[cfg(feature = "dev")]
mod demo;
mod doctor;
mod dtp;
mod flow;
mod job;
mod job_new;
mod job_test;
mod mappings_new;
mod ops;
mod report;
mod run;
mod sharing;
#[cfg(feature = "dev")]
mod sim;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    about = "referral bridge: Primero ⇄ proGres referrals through sandboxed jobs"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `bridge=debug`.
    /// Default: for `bridge run`, one line per run plus every warning
    /// (`warn,bridge_service=info,bridge_runtime::reload=info`); for the
    /// other commands, warnings only.
    #[arg(long, global = true, env = "BRIDGE_LOG")]
    log: Option<String>,
    /// Log line format on stderr: `human` or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "BRIDGE_LOG_FORMAT",
        value_enum,
        default_value_t = bridge_telemetry::LogFormat::Human
    )]
    log_format: bridge_telemetry::LogFormat,
    /// Precompiled-component cache folder.
    #[arg(long, global = true, env = "BRIDGE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run PING workflow 1.1 against built-in simulators with seeded referrals, and check the outcome.
    #[cfg(feature = "dev")]
    Demo(demo::DemoArgs),
    /// Run the Primero and PING simulators (and DTP with --dtp-port) until interrupted.
    #[cfg(feature = "dev")]
    Sim(sim::SimArgs),
    /// Run flows.
    #[command(subcommand)]
    Flow(flow::FlowCommand),
    /// Work with one job component.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Build the JavaScript jobs into components (skips unchanged ones).
    #[command(subcommand)]
    Jobs(job::JobsCommand),
    /// Work with a country's mapping folder.
    #[command(subcommand)]
    Mappings(job::MappingsCommand),
    /// DTP (design A) client tools.
    #[command(subcommand)]
    Dtp(dtp::DtpCommand),
    /// The inbox DTP pushes to (design A).
    #[command(subcommand)]
    Inbox(dtp::InboxCommand),
    /// Run the service: scheduler, inbox, hot reload and metrics, until SIGTERM or Ctrl-C.
    Run(run::RunArgs),
    /// Past runs: `bridge runs [--flow F]`, `bridge runs show <id>`.
    Runs(ops::RunsArgs),
    /// Records that failed too often: list and replay.
    #[command(subcommand)]
    DeadLetter(ops::DeadLetterCommand),
    /// The audit trail of every share: verify the chain, list, export, prune.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Reports for the focal points: `bridge report rejected-open`.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Where the cursor flows read from next: show and set.
    #[command(subcommand)]
    Cursor(ops::CursorCommand),
    /// The state database: `bridge state backup <file> --config bridge.toml`.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Alerts raised for manual procedures (consent revoked after a share) and their webhook delivery.
    Alerts(alerts::AlertsArgs),
    /// Check a bridge.toml.
    #[command(subcommand)]
    Config(ops::ConfigCommand),
    /// The operator console: make an account's password hash.
    #[command(subcommand)]
    Console(console::ConsoleCommand),
    /// Preflight against the configured partners, read-only: reachable, credentials, role, users, shipping processes, certificate.
    Doctor(doctor::DoctorArgs),
    /// Benchmarks: job layer, OpenFn side by side, end to end, scaling, the state store on SQLite and PostgreSQL; writes bench/results.md (`--only state --out FILE`: that part alone).
    #[cfg(feature = "dev")]
    Bench(bench::BenchArgs),
}

/// The service's default: what a person watching it needs (each run's
/// counts and duration, starts, stops, reloads, job swaps) and every
/// warning; per-record lines stay at `info` in the flows, off by default.
const SERVICE_LOG: &str =
    "warn,bridge_service=info,bridge_runtime::reload=info,bridge_console=info";

pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let log = cli.log.take().unwrap_or_else(|| {
        match cli.command {
            Command::Run(_) => SERVICE_LOG,
            _ => "warn",
        }
        .to_string()
    });
    #[cfg(feature = "dev")]
    if matches!(&cli.command, Command::Bench(args) if args.is_worker()) {
        // Set first, so the init below is a no-op: a worker times `record` spans.
        bridge_bench::worker::init_worker_tracing(&log);
    }
    bridge_telemetry::init(&log, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cache_dir = cli.cache_dir.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            #[cfg(feature = "dev")]
            Command::Demo(args) => demo::run(args, cache_dir).await,
            #[cfg(feature = "dev")]
            Command::Sim(args) => sim::run(args).await,
            Command::Flow(cmd) => flow::run(cmd, cache_dir).await,
            Command::Job(cmd) => job::run_job_command(cmd, cache_dir).await,
            Command::Jobs(cmd) => job::run_jobs_command(cmd),
            Command::Mappings(cmd) => job::run_mappings_command(cmd, cache_dir).await,
            Command::Dtp(cmd) => dtp::run_dtp_command(cmd),
            Command::Inbox(cmd) => dtp::run_inbox_command(cmd, cache_dir).await,
            Command::Run(args) => run::run(args, cache_dir).await,
            Command::Runs(args) => ops::runs(args).await,
            Command::DeadLetter(cmd) => ops::dead_letter(cmd, cache_dir).await,
            Command::Cursor(cmd) => ops::cursor(cmd).await,
            Command::State(cmd) => state::run(cmd).await,
            Command::Audit(cmd) => audit::run(cmd).await,
            Command::Report(cmd) => report::run(cmd).await,
            Command::Config(cmd) => ops::config(cmd, cache_dir).await,
            Command::Alerts(args) => alerts::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Console(cmd) => console::run(cmd),
            #[cfg(feature = "dev")]
            Command::Bench(args) => bench::run(args, cache_dir).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The job runtime with the cache folder chosen on the command line.
pub(crate) fn job_runtime(
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<std::sync::Arc<bridge_runtime::JobRuntime>> {
    let mut config = bridge_runtime::RuntimeConfig::default();
    if let Some(dir) = cache_dir {
        config.cache_dir = dir;
    }
    Ok(std::sync::Arc::new(bridge_runtime::JobRuntime::new(
        config,
    )?))
}

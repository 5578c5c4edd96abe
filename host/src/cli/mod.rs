//! The `bridge` command.

mod demo;
mod dtp;
mod flow;
mod job;
mod sim;

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
    #[arg(long, global = true, env = "BRIDGE_LOG", default_value = "warn")]
    log: String,
    /// Precompiled-component cache folder.
    #[arg(long, global = true, env = "BRIDGE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run PING workflow 1.1 against built-in simulators with seeded referrals, and check the outcome.
    Demo(demo::DemoArgs),
    /// Run the Primero and PING simulators until interrupted.
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            Command::Demo(args) => demo::run(args, cache_dir).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Flow(cmd) => flow::run(cmd, cache_dir).await,
            Command::Job(cmd) => job::run_job_command(cmd, cache_dir).await,
            Command::Jobs(cmd) => job::run_jobs_command(cmd),
            Command::Mappings(cmd) => job::run_mappings_command(cmd, cache_dir).await,
            Command::Dtp(cmd) => dtp::run_dtp_command(cmd),
            Command::Inbox(cmd) => dtp::run_inbox_command(cmd, cache_dir).await,
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
) -> anyhow::Result<std::sync::Arc<crate::runtime::JobRuntime>> {
    let mut config = crate::runtime::RuntimeConfig::default();
    if let Some(dir) = cache_dir {
        config.cache_dir = dir;
    }
    Ok(std::sync::Arc::new(crate::runtime::JobRuntime::new(
        config,
    )?))
}

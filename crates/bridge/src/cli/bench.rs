//! `bridge bench`: the benchmark suite (see [`bridge_bench`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bridge_bench::worker::WorkerCommand;
use bridge_bench::{BenchOptions, Part};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    worker: Option<BenchCommand>,
    /// Small sizes only: runs every part in seconds (a smoke run; figures are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Run one part only.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Where to write the report (default: bench/results.md in the project).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Records worked on at once in the concurrent end-to-end runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Calls in flight per partner in the concurrent end-to-end runs.
    #[arg(long, default_value_t = 32)]
    max_in_flight: usize,
    /// Injected partner latency (milliseconds per call) in the end-to-end part.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// PING calls per second in the rate-limit run.
    #[arg(long, default_value_t = 50.0)]
    rate_limit: f64,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// One measurement in a fresh process (used by `bridge bench` itself).
    #[command(subcommand, hide = true)]
    Worker(WorkerCommand),
}

impl BenchArgs {
    /// A worker installs its own log subscriber (it times `record` spans).
    pub fn is_worker(&self) -> bool {
        self.worker.is_some()
    }
}

pub async fn run(args: BenchArgs, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if let Some(BenchCommand::Worker(cmd)) = args.worker {
        let value = bridge_bench::worker::run(cmd, cache_dir).await?;
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let out = match args.out {
        Some(out) => out,
        None => bridge_runtime::toolchain::ProjectDirs::locate()?
            .root
            .join("bench")
            .join("results.md"),
    };
    let opts = BenchOptions {
        quick: args.quick,
        only: args.only,
        out,
        cache_dir,
        concurrency: args.concurrency.max(1),
        max_in_flight: args.max_in_flight.max(1),
        latency: Duration::from_millis(args.latency_ms),
        rate_limit: args.rate_limit,
        exe: std::env::current_exe()?,
    };
    bridge_bench::run(opts).await?;
    Ok(ExitCode::SUCCESS)
}

//! `bridge run --config bridge.toml`: the service.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::BridgeConfig;
use crate::service::{self, RunOptions};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long)]
    config: PathBuf,
    /// Run every scheduled flow once, then exit (exit 1 when a run could
    /// not start or stopped early).
    #[arg(long)]
    once: bool,
    /// Create the state database when it does not exist (first start of a
    /// new deployment).
    #[arg(long)]
    init: bool,
}

pub async fn run(args: RunArgs, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = BridgeConfig::load(&args.config)?;
    let summary = service::run(
        &config,
        RunOptions {
            cache_dir,
            once: args.once,
            init: args.init,
        },
        service::shutdown::signal(),
    )
    .await?;
    if !args.once {
        return Ok(ExitCode::SUCCESS);
    }
    for report in &summary.reports {
        print!("{report}");
    }
    for (flow, why) in &summary.failed {
        println!("flow {flow}: could not start: {why}");
    }
    Ok(if summary.all_ran() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

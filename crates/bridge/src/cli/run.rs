//! `bridge run --config bridge.toml`: the service.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use bridge_service::config::BridgeConfig;
use bridge_service::shutdown::Stop;
use bridge_service::{self as service, RunOptions};

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
    let mut init = args.init;
    let mut next: Option<BridgeConfig> = None;
    loop {
        let config = match next.take() {
            Some(checked) => checked,
            None => BridgeConfig::load(&args.config)?,
        };
        let reload: Arc<Mutex<Option<BridgeConfig>>> = Arc::default();
        let wait =
            service::shutdown::signal_or_reload(args.config.clone(), service::check::check_reload);
        let slot = reload.clone();
        let shutdown = async move {
            if let Stop::Reload(config) = wait.await {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(*config);
            }
        };
        let summary = service::run(
            &config,
            RunOptions {
                cache_dir: cache_dir.clone(),
                once: args.once,
                init,
            },
            shutdown,
        )
        .await?;
        let reloaded = reload.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (false, Some(config)) = (args.once, reloaded) {
            // The runs in flight finished and the state database was let
            // go: start again with the new configuration and credentials.
            tracing::info!("starting again with the reloaded configuration");
            init = false;
            next = Some(config);
            continue;
        }
        if !args.once {
            return Ok(ExitCode::SUCCESS);
        }
        for report in &summary.reports {
            print!("{report}");
        }
        for (flow, why) in &summary.failed {
            println!("flow {flow}: could not start: {why}");
        }
        return Ok(if summary.all_ran() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
}

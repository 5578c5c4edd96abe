//! `bridge flow run <flow> --config bridge.toml`: one run of one flow.

use std::path::PathBuf;
use std::process::ExitCode;

use bridge_flows::app::{new_run_id, today, Mode};
use bridge_flows::RecordOutcome;
use bridge_service::config::BridgeConfig;
use bridge_store::OpenMode;

#[derive(Debug, clap::Subcommand)]
pub enum FlowCommand {
    /// Run a flow once and print its report. Exit 0: every record delivered;
    /// 2: the run finished but some records were held, skipped or failed;
    /// 1: the run could not start or stopped early.
    Run {
        /// Flow name, e.g. `ping-1.1`.
        flow: String,
        #[arg(long)]
        config: PathBuf,
        /// Today's date for the jobs (YYYY-MM-DD); default: the machine's date.
        #[arg(long)]
        today: Option<String>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read from the partners and map every record, then report what a
        /// real run would write and acknowledge, writing nothing anywhere:
        /// no partner write (the clients refuse them), no acknowledgement,
        /// no cursor move, and the state database left as it was (the run
        /// works on a scratch copy). Exit 0 when every record could be
        /// mapped, 2 when some would be held, skipped or failed.
        #[arg(long)]
        dry_run: bool,
        /// Create the state database when it does not exist (first run of a
        /// new deployment).
        #[arg(long)]
        init: bool,
    },
}

pub async fn run(cmd: FlowCommand, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match cmd {
        FlowCommand::Run {
            flow,
            config,
            today: date,
            json,
            dry_run,
            init,
        } => {
            let config = BridgeConfig::load(&config)?;
            let mode = if dry_run { Mode::DryRun } else { Mode::Live };
            let app = bridge_service::build::from_config_as(
                &config,
                cache_dir,
                mode,
                OpenMode::from_init(init),
            )
            .await?;
            let report = app
                .run_flow(&flow, &new_run_id(), &date.unwrap_or_else(today))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(if report.aborted.is_some() {
                ExitCode::FAILURE
            } else if report.records.iter().all(|r| {
                if dry_run {
                    r.outcome.is_delivered()
                        || matches!(r.outcome, RecordOutcome::WouldWrite { .. })
                } else {
                    r.outcome.is_delivered() && r.acknowledged
                }
            }) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

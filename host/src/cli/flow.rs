//! `bridge flow run <flow> --config bridge.toml`: one run of one flow.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::{new_run_id, today, App};
use crate::config::BridgeConfig;
use crate::store::OpenMode;

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
            init,
        } => {
            let config = BridgeConfig::load(&config)?;
            let app = App::from_config(&config, cache_dir, OpenMode::from_init(init)).await?;
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
            } else if report
                .records
                .iter()
                .all(|r| r.outcome.is_delivered() && r.acknowledged)
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

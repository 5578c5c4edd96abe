//! `bridge doctor --config bridge.toml`: read-only preflight against the
//! configured partners (see `docs/operator/doctor.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use bridge_service::config::BridgeConfig;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The deployment's bridge.toml.
    #[arg(long)]
    config: PathBuf,
    /// Print the findings as JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when no finding is an error, 1 otherwise (also when the config
/// cannot be read).
pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let config = BridgeConfig::load(&args.config)?;
    let report = bridge_service::doctor::run(&config).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!("bridge doctor: {}", config.file.display());
        print!("{}", report.to_human());
    }
    Ok(if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

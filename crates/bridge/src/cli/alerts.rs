//! `bridge alerts`: the alerts raised for manual procedures (consent revoked
//! after a share), and whether the webhook took them. Read-only.

use std::path::PathBuf;
use std::process::ExitCode;

use bridge_store::OpenMode;

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// The deployment's bridge.toml (its [state] database is read).
    #[arg(long)]
    config: PathBuf,
    /// Only alerts the webhook has not taken yet.
    #[arg(long)]
    pending: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let store = super::ops::open_store(&args.config, OpenMode::Existing).await?;
    let alerts = store.alerts(args.pending).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&alerts)?);
        return Ok(ExitCode::SUCCESS);
    }
    if alerts.is_empty() {
        println!("no alerts");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:<16}  {:<38}  {:<8}  {:<24}  {:<24}  {:>8}  last error",
        "id", "kind", "case", "flow", "raised", "delivered", "attempts"
    );
    for a in alerts {
        println!(
            "{:>5}  {:<16}  {:<38}  {:<8}  {:<24}  {:<24}  {:>8}  {}",
            a.id,
            a.kind,
            a.case_id,
            a.flow,
            a.raised_at,
            a.delivered_at.as_deref().unwrap_or("pending"),
            a.attempts,
            a.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

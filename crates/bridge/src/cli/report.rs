//! `bridge report rejected-open`: Primero cases created from proGres whose
//! every proGres referral was rejected and which are still open (ids and
//! dates only; read-only: Primero is only read, the state database only
//! read). What counts and where each column comes from:
//! `bridge_flows::rejected_open`.

use std::process::ExitCode;

use anyhow::Context as _;

use bridge_flows::rejected_open::{rejected_open, Criteria, RejectedOpenReport};
use bridge_mappings::MappingSet;
use bridge_partners::primero::PrimeroClient;
use bridge_service::config::BridgeConfig;
use bridge_store::OpenMode;

#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Cases created from proGres, every proGres referral rejected, still open: for the focal point to decide on closure.
    RejectedOpen {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Also count cases created by this Primero user (e.g. the OpenFn jobs' API user before the cutover); repeatable.
        #[arg(long = "created-by", value_name = "USER_NAME")]
        created_by: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Exit code when Primero's listing never added up: run it again.
const INCOMPLETE: u8 = 2;

pub async fn run(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    let ReportCommand::RejectedOpen {
        config,
        created_by,
        json,
    } = cmd;
    let config = BridgeConfig::load(&config)?;
    let primero = PrimeroClient::new(config.primero_client_config()?)
        .with_context(|| format!("{}: [primero]", config.file.display()))?
        .read_only();
    let mappings_dir = config.resolve(&config.jobs.mappings);
    let mappings = MappingSet::load_dir(&mappings_dir)?;
    // The rejection dates; without a state database the report still lists the cases.
    let store = bridge_service::build::open_state(&config, OpenMode::Existing).await?;
    let mut creators = vec![config.primero.user_name.clone()];
    creators.extend(created_by.into_iter().filter(|c| !c.trim().is_empty()));
    creators.dedup();
    let criteria = Criteria::new(creators, Some(&mappings));
    let report = rejected_open(&primero, store.as_deref(), &criteria).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if !report.complete {
        eprintln!(
            "warning: Primero's pages did not add up to its total (cases changed while they were read): \
             the list may miss cases; run the report again"
        );
        return Ok(ExitCode::from(INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}

fn dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn print_table(r: &RejectedOpenReport) {
    println!(
        "{} open case(s) created from proGres (by {}), every proGres referral rejected ({}); {} open case(s) read",
        r.cases.len(),
        r.creators.join(", "),
        r.rejected_statuses.join(", "),
        r.listed
    );
    if r.cases.is_empty() {
        return;
    }
    println!(
        "\n{:<36}  {:<36}  {:<9}  {:<14}  {:<24}  {:<24}  {:<24}  status",
        "case record id",
        "case_id",
        "display",
        "individual",
        "interventions",
        "created",
        "last rejection sent"
    );
    for c in &r.cases {
        println!(
            "{:<36}  {:<36}  {:<9}  {:<14}  {:<24}  {:<24}  {:<24}  {}",
            c.case_record_id,
            dash(&c.case_id),
            dash(&c.case_id_display),
            dash(&c.unhcr_individual_no),
            c.intervention_numbers.join(" "),
            dash(&c.created_at),
            dash(&c.last_rejected_at),
            c.status
        );
    }
}

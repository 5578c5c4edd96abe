//! `bridge demo`: PING workflow 1.1 against the built-in simulators, twice,
//! then both designs' full round trips.
//!
//! The first run must create, append, recognise a re-send, hold an ambiguous
//! match and fail an unmapped service type exactly as the seed implies; the
//! second run must find only the two undelivered referrals and write nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use bridge_demo::scenario::{seed_workflow_1_1, Simulators};
use bridge_flows::app::App;
use bridge_flows::ping_1_1::FLOW;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{JobRuntime, RuntimeConfig};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Today's date for the jobs (YYYY-MM-DD).
    #[arg(long)]
    today: Option<String>,
    /// Keep the demo's state databases in this folder (default: in memory),
    /// e.g. to inspect what is stored: system ids, statuses and timestamps.
    #[arg(long, conflicts_with = "state_url")]
    state_dir: Option<PathBuf>,
    /// Keep the demo's state in this PostgreSQL database instead (a URL
    /// whose user may create schemas): one schema per scenario, `demo_1_1`,
    /// `design_b` and `design_a`, created on first use.
    #[arg(long, env = "BRIDGE_DEMO_STATE_URL")]
    state_url: Option<String>,
}

/// Where the demo keeps its state.
#[derive(Clone, Copy)]
enum DemoState<'a> {
    Memory,
    Dir(&'a std::path::Path),
    Postgres(&'a str),
}

/// A scenario's state store: `<name>.db` in the folder, schema `<name>` in
/// the PostgreSQL database, or in memory.
async fn open_store(
    state: DemoState<'_>,
    name: &str,
) -> anyhow::Result<Arc<dyn bridge_store::Store>> {
    use bridge_store::{OpenMode, PostgresStore, SqliteStore};
    // The demo's own databases: created on first use.
    Ok(match state {
        DemoState::Dir(dir) => {
            Arc::new(SqliteStore::open(&dir.join(format!("{name}.db")), OpenMode::Init).await?)
        }
        DemoState::Postgres(url) => Arc::new(
            PostgresStore::open_schema(url, &name.replace(['-', '.'], "_"), OpenMode::Init).await?,
        ),
        DemoState::Memory => Arc::new(SqliteStore::in_memory().await?),
    })
}

pub async fn run(args: DemoArgs, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let project = ProjectDirs::locate()?;
    eprintln!("== building jobs (unchanged jobs are skipped)");
    project.build_jobs(&[])?;

    eprintln!("== starting the Primero and PING simulators on loopback");
    let sims = Simulators::start_loopback().await?;
    let seed = seed_workflow_1_1(&sims, 1);
    eprintln!(
        "   Primero {}  PING {}  ({} pending proGres referrals, {} Primero cases)",
        sims.primero.base_url(),
        sims.ping.base_url(),
        seed.first_run.fetched,
        seed.cases_before
    );

    eprintln!("== loading the job (precompile cache: compile once, then load)");
    let mut rc = RuntimeConfig::default();
    if let Some(dir) = cache_dir {
        rc.cache_dir = dir;
    }
    let runtime = Arc::new(JobRuntime::new(rc)?);
    let mappings = project.mappings("kenya-dadaab");
    let primero = sims.primero_client_config();
    let ping = sims.ping_client_config();
    let state_dir = match (&args.state_dir, &args.state_url) {
        (Some(dir), _) => DemoState::Dir(dir),
        (None, Some(url)) => DemoState::Postgres(url),
        (None, None) => DemoState::Memory,
    };
    let store = open_store(state_dir, "demo-1.1").await?;
    let app = App::new(
        store,
        runtime,
        primero,
        Some(ping),
        &bridge_flows::app::job_files(&project.jobs_dist())?,
        &mappings,
    )
    .await?;
    if let Some(job) = app.catalog.job(FLOW) {
        eprintln!(
            "   {} {} loaded in {} ms ({})",
            job.name,
            job.info.version,
            job.load_time.as_millis(),
            if job.from_cache {
                "from the precompile cache"
            } else {
                "compiled now, cached for next time"
            }
        );
    }

    let today = args.today.unwrap_or_else(bridge_flows::app::today);
    let mut problems = Vec::new();
    for (label, expected) in [
        ("first run", seed.first_run),
        ("second run (re-run)", seed.second_run),
    ] {
        let run_started = Instant::now();
        let report = app
            .run_recorded_on(FLOW, bridge_store::Trigger::Manual, &today)
            .await?;
        let pending = sims.ping_sim().pending_intervention_ids().len();
        println!(
            "\n== workflow 1.1, {label} ({} ms)",
            run_started.elapsed().as_millis()
        );
        print!("{report}");
        println!("  {:<18}{:>6}", "still pending", pending);
        for diff in expected.check(&report, pending) {
            problems.push(format!("{label}: {diff}"));
        }
    }

    println!("\n== Primero now holds (system ids only; personal data stays in Primero)");
    println!(
        "  {:<38} {:<16} {:>8}  interventions",
        "case record id", "unhcr_individual_no", "services"
    );
    let cases = sims.primero_sim().cases();
    for case in &cases {
        let services = case["services_section"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let numbers: Vec<String> = services
            .iter()
            .filter_map(|s| s["progres_interventionnumber"].as_str())
            .map(|n| n.split(',').next().unwrap_or(n).to_string())
            .collect();
        println!(
            "  {:<38} {:<16} {:>8}  {}",
            case["id"].as_str().unwrap_or("?"),
            case["unhcr_individual_no"].as_str().unwrap_or("?"),
            services.len(),
            numbers.join(" ")
        );
    }
    let expected_cases = seed.cases_before + seed.first_run.created;
    if cases.len() != expected_cases {
        problems.push(format!(
            "Primero holds {} cases, expected {expected_cases}",
            cases.len()
        ));
    }

    // Both designs' round trips, on fresh simulators so the numbers above stay clean.
    println!("\n== round trips (each step checked in the partner simulators)");
    let jobs = bridge_flows::app::job_files(&project.jobs_dist())?;
    let sims_b = Simulators::start_loopback().await?;
    // The simulators' initial cursors: they hold no history.
    let app_b = sims_b
        .app(
            open_store(state_dir, "design-b").await?,
            app.runtime.clone(),
            &project.jobs_dist(),
            &mappings,
        )
        .await?;
    let b = bridge_demo::round_trip::design_b(&app_b, &sims_b, &today).await?;
    print!("{b}");
    if !b.ok() {
        problems.push("design B round trip did not complete".into());
    }
    let sims_a = Simulators::start_loopback().await?;
    let mut app_a = App::new(
        open_store(state_dir, "design-a").await?,
        app.runtime.clone(),
        sims_a.primero_client_config(),
        None,
        &jobs,
        &project.mappings("ethiopia-gambella"),
    )
    .await?;
    app_a.initial_cursors = bridge_demo::scenario::sim_initial_cursors();
    let dtp = bridge_demo::round_trip::DtpSide::start().await?;
    app_a.dtp = Some(bridge_partners::dtp::DtpClient::new(dtp.client_config())?);
    let inbox = bridge_demo::round_trip::InboxSide::start(&app_a).await?;
    let a = bridge_demo::round_trip::design_a(&app_a, &sims_a, &dtp, &inbox, &today).await?;
    print!("{a}");
    if !a.ok() {
        problems.push("design A round trip did not complete".into());
    }

    println!("\ndemo wall time: {:.1} s", started.elapsed().as_secs_f64());
    if problems.is_empty() {
        println!("demo OK: every number is what the seed implies");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo FAILED:");
        for p in &problems {
            println!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

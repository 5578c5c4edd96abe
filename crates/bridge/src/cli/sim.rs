//! `bridge sim`: the partner simulators, standalone, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bridge_demo::scenario::{seed_workflow_1_1, Simulators};
use bridge_runtime::toolchain::ProjectDirs;

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Port of the Primero v2 simulator (0: any free port).
    #[arg(long, default_value_t = 8081)]
    primero_port: u16,
    /// Port of the PING simulator (0: any free port).
    #[arg(long, default_value_t = 8082)]
    ping_port: u16,
    /// Address to listen on; keep it on loopback.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Seed the workflow 1.1 demo referrals.
    #[arg(long)]
    seed_demo: bool,
    /// Write a bridge.toml for these simulators to this path.
    #[arg(long)]
    write_config: Option<PathBuf>,
}

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let sims = Simulators::start(
        SocketAddr::new(args.host, args.primero_port),
        SocketAddr::new(args.host, args.ping_port),
    )
    .await?;
    println!("Primero v2 simulator: {}", sims.primero.base_url());
    println!("PING simulator:       {}", sims.ping.base_url());
    println!("PING token endpoint:  {}", sims.ping.token_url());
    if args.seed_demo {
        let seed = seed_workflow_1_1(&sims, 1);
        println!(
            "seeded {} pending proGres referrals",
            seed.first_run.fetched
        );
    }
    if let Some(path) = args.write_config {
        let project = ProjectDirs::locate()?;
        std::fs::write(
            &path,
            sims.config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab")),
        )?;
        println!("wrote {}; its secrets are read from:", path.display());
        for (var, value) in sims.secret_env() {
            println!("  export {var}={value}");
        }
    }
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

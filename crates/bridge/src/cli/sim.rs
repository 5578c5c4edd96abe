//! `bridge sim`: the partner simulators, standalone, until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
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
        // Paths relative to the folder the config is written into (the
        // config's own rule for relative paths), so the folder can move with
        // the clone.
        let folder = config_folder(&path)?;
        let jobs = relative_to(&folder, &project.jobs_dist());
        let mappings = relative_to(&folder, &project.mappings("kenya-dadaab"));
        std::fs::write(&path, sims.config_toml(&jobs, &mappings))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}; its secrets are read from:", path.display());
        for (var, value) in sims.secret_env() {
            println!("  export {var}={value}");
        }
    }
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

/// The absolute folder a config written to `path` lives in.
fn config_folder(path: &Path) -> anyhow::Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parent
        .canonicalize()
        .with_context(|| format!("folder of {}", path.display()))
}

/// `target` as seen from `base` (both absolute): `../jobs/dist` and the like.
fn relative_to(base: &Path, target: &Path) -> PathBuf {
    let target = target
        .canonicalize()
        .unwrap_or_else(|_| target.to_path_buf());
    let base: Vec<Component> = base.components().collect();
    let to: Vec<Component> = target.components().collect();
    let common = base.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        // Nothing in common but the root: the absolute path says more.
        return target;
    }
    let mut rel = PathBuf::new();
    for _ in common..base.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::relative_to;
    use std::path::Path;

    #[test]
    fn paths_relative_to_the_config_folder() {
        let r = |b: &str, t: &str| relative_to(Path::new(b), Path::new(t));
        assert_eq!(
            r("/srv/clone", "/srv/clone/jobs/dist"),
            Path::new("jobs/dist")
        );
        assert_eq!(
            r("/srv/clone/try", "/srv/clone/jobs/dist"),
            Path::new("../jobs/dist")
        );
        assert_eq!(
            r("/tmp/x", "/srv/clone/mappings/k"),
            Path::new("/srv/clone/mappings/k")
        );
        assert_eq!(r("/srv/clone", "/srv/clone"), Path::new("."));
    }
}

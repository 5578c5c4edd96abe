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
        // The PING flows on a one-minute schedule, so `bridge run` with this
        // file moves the seeded referrals by itself.
        let config = format!(
            "{}\n[schedule]\n\"ping-1.1\" = \"0 * * * * *\"\n\"ping-2.1\" = \"15 * * * * *\"\n\"ping-1.2\" = \"30 * * * * *\"\n\"ping-2.2\" = \"45 * * * * *\"\n",
            sims.config_toml(&jobs, &mappings)
        );
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        // The simulators' secrets, for `set -a; . bridge.env` (the compose
        // trial does this); printed too.
        let env_file = path.with_extension("env");
        let env: String = sims
            .secret_env()
            .iter()
            .map(|(var, value)| format!("{var}={value}\n"))
            .collect();
        write_private(&env_file, &env)?;
        println!(
            "wrote {} and {}; its secrets are read from:",
            path.display(),
            env_file.display()
        );
        for (var, value) in sims.secret_env() {
            println!("  export {var}={value}");
        }
    }
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path`, readable by this user only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
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

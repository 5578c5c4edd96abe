//! `bridge sim`: the partner simulators, standalone, until Ctrl-C. With
//! `--dtp-port`, DTP too (design A): it pushes to the bridge's inbox, and
//! `--write-config` writes a design A configuration.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bridge_demo::dtp_trial::{seed_dtp, DecisionPolicy, DtpTrial, Push};
use bridge_demo::scenario::{seed_workflow_1_1, Simulators};
use bridge_runtime::toolchain::ProjectDirs;

/// The mapping folder of each design's trial.
const PING_COUNTRY: &str = "kenya-dadaab";
const DTP_COUNTRY: &str = "ethiopia-gambella";

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Port of the Primero v2 simulator (0: any free port).
    #[arg(long, default_value_t = 8081)]
    primero_port: u16,
    /// Port of the PING simulator (0: any free port).
    #[arg(long, default_value_t = 8082)]
    ping_port: u16,
    /// Also run the DTP simulator (design A, mutual TLS) on this port (0: any
    /// free port). `--write-config` then writes a DTP design configuration,
    /// and DTP pushes to the bridge's inbox.
    #[arg(long)]
    dtp_port: Option<u16>,
    /// With --dtp-port: the port the bridge's inbox is to listen on, written
    /// into the configuration; DTP pushes there (0: a free port, chosen now).
    #[arg(long, default_value_t = 8090, requires = "dtp_port")]
    inbox_port: u16,
    /// With --dtp-port: what proGres decides on each referral DTP receives
    /// (pushed to the inbox, flow 2-3).
    #[arg(long, value_enum, default_value_t = Decision::Accept, requires = "dtp_port")]
    dtp_decision: Decision,
    /// Address to listen on; keep it on loopback.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Seed the demo referrals: PING workflow 1.1's, or with --dtp-port the
    /// DTP design's (a Primero referral to UNHCR, a caseworker's decision, a
    /// proGres referral DTP pushes).
    #[arg(long)]
    seed_demo: bool,
    /// Write a bridge.toml for these simulators to this path (and its
    /// secrets to the .env file beside it).
    #[arg(long)]
    write_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Decision {
    /// proGres accepts.
    Accept,
    /// proGres rejects (reason "Not applicable").
    Reject,
    /// No decision is pushed.
    None,
}

impl From<Decision> for DecisionPolicy {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Accept => DecisionPolicy::Accept,
            Decision::Reject => DecisionPolicy::Reject,
            Decision::None => DecisionPolicy::None,
        }
    }
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
    let dtp = match args.dtp_port {
        Some(port) => Some(
            DtpTrial::start(
                SocketAddr::new(args.host, port),
                SocketAddr::new(args.host, args.inbox_port),
            )
            .await
            .context("starting the DTP simulator")?,
        ),
        None => None,
    };
    if let Some(trial) = &dtp {
        let urls = trial.dtp.urls();
        println!(
            "DTP simulator:        {} (mutual TLS)",
            trial.dtp.base_url()
        );
        println!("  {}", urls.receive_incoming_referral);
        println!("  {}", urls.receive_decision_outgoing_referral);
        println!("  {}", urls.notification);
        println!(
            "DTP trusts the client certificate with thumbprint {}",
            trial.pki.client_thumbprint()
        );
        println!("DTP pushes to the bridge's inbox at {}", trial.inbox_url);
    }
    let mut pushes: Vec<Push> = Vec::new();
    if args.seed_demo {
        match &dtp {
            None => {
                let seed = seed_workflow_1_1(&sims, 1);
                println!(
                    "seeded {} pending proGres referrals",
                    seed.first_run.fetched
                );
            }
            Some(_) => {
                let mappings = ProjectDirs::locate()?.mappings(DTP_COUNTRY);
                let set = bridge_mappings::MappingSet::load_dir(&mappings)?;
                let unhcr_user = set
                    .deployment
                    .unhcr_user
                    .with_context(|| format!("{}: no deployment.unhcr_user", mappings.display()))?;
                let seed = seed_dtp(&sims, &unhcr_user, 1)?;
                print!("{seed}");
                pushes = seed.pushes;
            }
        }
    }
    if let Some(path) = &args.write_config {
        let (config, env) = match &dtp {
            None => ping_config(&sims, path)?,
            Some(trial) => dtp_config(&sims, trial, path)?,
        };
        std::fs::write(path, config).with_context(|| format!("writing {}", path.display()))?;
        // The simulators' secrets, for `set -a; . bridge.env` (the compose
        // trial does this); printed too.
        let env_file = path.with_extension("env");
        let text: String = env
            .iter()
            .map(|(var, value)| format!("{var}={value}\n"))
            .collect();
        write_private(&env_file, &text)?;
        println!(
            "wrote {} and {}; its secrets are read from:",
            path.display(),
            env_file.display()
        );
        for (var, value) in env {
            println!("  export {var}={value}");
        }
    }
    if let Some(trial) = &dtp {
        let mut events = trial.play(sims.primero_sim().clone(), pushes, args.dtp_decision.into());
        let primero_url = sims.primero.base_url();
        let primero_user = sims.primero_config.user_name.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                for line in event.lines(&primero_url, &primero_user) {
                    println!("{line}");
                }
            }
        });
    }
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

type Secrets = Vec<(&'static str, String)>;

/// The PING design's config: the PING flows on a one-minute schedule, so
/// `bridge run` with this file moves the seeded referrals by itself.
fn ping_config(sims: &Simulators, path: &Path) -> anyhow::Result<(String, Secrets)> {
    let project = ProjectDirs::locate()?;
    // Paths relative to the folder the config is written into (the
    // config's own rule for relative paths), so the folder can move with
    // the clone.
    let folder = config_folder(path)?;
    let jobs = relative_to(&folder, &project.jobs_dist());
    let mappings = relative_to(&folder, &project.mappings(PING_COUNTRY));
    let config = format!(
        "{}\n[schedule]\n\"ping-1.1\" = \"0 * * * * *\"\n\"ping-2.1\" = \"15 * * * * *\"\n\"ping-1.2\" = \"30 * * * * *\"\n\"ping-2.2\" = \"45 * * * * *\"\n",
        sims.config_toml(&jobs, &mappings)
    );
    Ok((config, sims.secret_env()))
}

/// The DTP design's config: the test PKI's certificate and key files next
/// to it (named relative to it), the Gambella folder, `[dtp]`, `[inbox]`,
/// and the DTP flows on a one-minute schedule.
fn dtp_config(
    sims: &Simulators,
    trial: &DtpTrial,
    path: &Path,
) -> anyhow::Result<(String, Secrets)> {
    let project = ProjectDirs::locate()?;
    let folder = config_folder(path)?;
    let written = trial
        .pki
        .write_files(&folder)
        .with_context(|| format!("writing the test PKI's files into {}", folder.display()))?;
    let name = |p: &Path| PathBuf::from(p.file_name().unwrap_or(p.as_os_str()));
    let files = bridge_sim::dtp::TestPkiFiles {
        ca_cert: name(&written.ca_cert),
        client_cert: name(&written.client_cert),
        client_key: name(&written.client_key),
    };
    let jobs = relative_to(&folder, &project.jobs_dist());
    let mappings = relative_to(&folder, &project.mappings(DTP_COUNTRY));
    Ok((
        trial.config_toml(sims, &files, &jobs, &mappings),
        trial.secret_env(sims),
    ))
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

/// The absolute folder a config written to `path` lives in (made when missing).
fn config_folder(path: &Path) -> anyhow::Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("making the folder of {}", path.display()))?;
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

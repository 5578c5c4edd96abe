//! `bridge dtp thumbprint` and `bridge inbox serve` (design A).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use bridge_inbox::INBOX_PATH;
use bridge_partners::dtp::sha1_thumbprint;
use bridge_service::config::BridgeConfig;
use bridge_service::inbox::BoundInbox;
use bridge_store::OpenMode;

#[derive(Debug, clap::Subcommand)]
pub enum DtpCommand {
    /// Print the SHA-1 thumbprint of a PEM client certificate (the value UNHCR pins).
    Thumbprint {
        /// PEM certificate file.
        #[arg(long)]
        cert: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum InboxCommand {
    /// Serve the inbox DTP pushes to, and process messages as they arrive,
    /// until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Today's date for the jobs (YYYY-MM-DD); default: the machine's date.
        #[arg(long)]
        today: Option<String>,
        /// Create the state database when it does not exist (first start of
        /// a new deployment).
        #[arg(long)]
        init: bool,
    },
    /// Re-seal every kept message under the current seal key (after a seal
    /// key rotation), so the previous keys can be removed. Safe while the
    /// service runs: a message taken meanwhile is left alone.
    Reseal {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run_dtp_command(cmd: DtpCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DtpCommand::Thumbprint { cert } => {
            let pem =
                std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let thumbprint =
                sha1_thumbprint(&pem).with_context(|| format!("{}", cert.display()))?;
            println!("{thumbprint}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn run_inbox_command(
    cmd: InboxCommand,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        InboxCommand::Reseal { config } => reseal(&config).await,
        InboxCommand::Serve {
            config,
            today,
            init,
        } => {
            let config = BridgeConfig::load(&config)?;
            // Secrets first: refuse to start without a seal key before doing any work.
            let settings = config.inbox_settings()?;
            anyhow::ensure!(
                config.state.is_some(),
                "{}: the inbox needs a [state] section: accepted messages must survive a restart",
                config.file.display()
            );
            let app =
                bridge_service::build::from_config(&config, cache_dir, OpenMode::from_init(init))
                    .await?;
            let inbox = BoundInbox::bind(&app, settings, today).await?;
            let addr = inbox.addr;
            // Tests and supervisors read the bound address (the port may be 0 in the config).
            println!("inbox listening on http://{addr}{INBOX_PATH}");
            std::io::stdout().flush()?;
            tracing::info!(%addr, "inbox listening");
            inbox.serve(bridge_service::shutdown::signal()).await?;
            println!("inbox stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bridge inbox reseal`: each kept message opened with the key ring and
/// sealed again under the current key; ids only in the output.
async fn reseal(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = BridgeConfig::parse(config)?;
    let settings = config.inbox_settings()?;
    let store = super::ops::open_store(&config.file, OpenMode::Existing).await?;
    let (mut resealed, mut current, mut taken, mut unopened) = (0, 0, 0, Vec::new());
    for message in store.inbox_all().await? {
        let sealer = &settings.sealer;
        if sealer.sealed_with_current(&message.id, &message.sealed_body) {
            current += 1;
            continue;
        }
        let Ok(plain) = sealer.open(&message.id, &message.sealed_body) else {
            unopened.push(message.id);
            continue;
        };
        let sealed = sealer
            .seal(&message.id, &plain)
            .map_err(|e| anyhow::anyhow!("message {}: {e}", message.id))?;
        drop(plain);
        if store
            .inbox_reseal(&message.id, &message.sealed_body, &sealed)
            .await?
        {
            resealed += 1;
        } else {
            taken += 1;
        }
    }
    println!(
        "re-sealed {resealed} message(s) under the current key; {current} already were; {taken} taken by the service meanwhile"
    );
    if unopened.is_empty() {
        println!("every kept message now opens with inbox.seal_key alone: the previous keys can be removed");
        return Ok(ExitCode::SUCCESS);
    }
    for id in &unopened {
        eprintln!("error: inbox message {id}: no configured seal key opens it (damaged, or sealed with a key no longer configured); left as it is");
    }
    Ok(ExitCode::FAILURE)
}

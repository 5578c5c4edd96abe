//! `bridge state backup`: a consistent copy of the state database, taken
//! while the service runs (docs/operator/backup.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bridge_service::config::BridgeConfig;
use bridge_store::SqliteStore;

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Copy the state database to a new file (mode 0600), consistent even
    /// while `bridge run` writes; the copy is checked before it is kept.
    Backup {
        /// The backup file to write; must not exist.
        file: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
}

pub async fn run(cmd: StateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StateCommand::Backup { file, config } => {
            let config = BridgeConfig::parse(&config)?;
            let state = config.state.as_ref().with_context(|| {
                format!(
                    "{}: no [state] section: this deployment keeps no state to back up",
                    config.file.display()
                )
            })?;
            let source = config.resolve(&state.path);
            if file.exists() {
                anyhow::bail!(
                    "{} exists: a backup is written to a new file only",
                    file.display()
                );
            }
            let started = std::time::Instant::now();
            let bytes = SqliteStore::backup(&source, &file).await?;
            println!(
                "backed up {} to {} ({bytes} bytes, {} ms, integrity check ok)",
                source.display(),
                file.display(),
                started.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

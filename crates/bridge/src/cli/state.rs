//! `bridge state backup`: a consistent copy of the state database, taken
//! while the service runs (docs/operator/backup.md).

use std::path::PathBuf;
use std::process::ExitCode;

use bridge_service::config::{BridgeConfig, StateTarget};
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
            let source = match config.state_target()? {
                Some(StateTarget::Sqlite(path)) => path,
                Some(target @ StateTarget::Postgres(_)) => anyhow::bail!(
                    "{}: key `state.url`: the state is in PostgreSQL ({}): `bridge state backup` \
                     copies a SQLite file only; back a PostgreSQL database up with pg_dump \
                     (e.g. `pg_dump --format=custom --file=bridge.dump \"$URL\"`, restored with \
                     pg_restore; docs/operator/state.md)",
                    config.file.display(),
                    target.shown()
                ),
                None => anyhow::bail!(
                    "{}: no [state] section: this deployment keeps no state to back up",
                    config.file.display()
                ),
            };
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

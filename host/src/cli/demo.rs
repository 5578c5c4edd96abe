//! `bridge demo`.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

pub async fn run(_args: DemoArgs, _cache: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

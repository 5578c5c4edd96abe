//! `bridge sim`: the partner simulators, standalone.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SimArgs {}

pub async fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

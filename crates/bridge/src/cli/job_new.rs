//! `bridge job new <name> --from <job>`: a variant of a job for a country.

use std::path::Path;
use std::process::ExitCode;

use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::variant;

pub fn new(name: &str, from: &str, mappings: Option<&Path>) -> anyhow::Result<ExitCode> {
    let project = ProjectDirs::locate()?;
    let v = variant::scaffold(&project, name, from, mappings)?;
    let shown = v
        .dir
        .strip_prefix(&project.root)
        .unwrap_or(&v.dir)
        .display()
        .to_string();
    println!(
        "created {shown}/: a variant of {} {} for flow {}, version {}, with its {} fixture(s) (written for mappings/{})",
        v.from,
        v.from_version,
        v.flow,
        variant::FIRST_VERSION,
        v.fixtures,
        v.fixture_mappings
    );
    let country = mappings
        .map(|m| m.display().to_string().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "mappings/<country>".to_string());
    println!(
        "next (docs/job-author/variants.md):
  1. change {shown}/index.js, and say at its top what differs from {from} and why
  2. name it in {country}/deployment.toml:
       [jobs]
       \"{flow}\" = \"{name}\"
  3. bridge job test {country}      # builds it, runs its fixtures; --update after a deliberate change
     npm test --prefix jobs
  4. bridge mappings check {country}
  5. bridge config check bridge.toml, then run the flow",
        from = v.from,
        flow = v.flow,
        name = v.name,
    );
    if mappings.is_none() {
        println!(
            "note: its fixtures still run against mappings/{} in `npm test`; to run them against the country's folder, set {{\"mappings\": \"<country>\"}} in {shown}/fixtures/fixtures.json (or use --mappings next time)",
            v.fixture_mappings
        );
    }
    Ok(ExitCode::SUCCESS)
}

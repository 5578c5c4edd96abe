//! `bridge job test <folder> [--update]`: every fixture of every job serving
//! a mapping folder, through the built components, in one summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bridge_mappings::MappingSet;
use bridge_runtime::fixtures::{self, Checked, FixtureSettings};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::JobInstance;

/// A unified diff of two JSON values, `-` the first (`None`: no file).
pub(crate) fn diff(
    expected: Option<&serde_json::Value>,
    actual: &serde_json::Value,
    header: (&str, &str),
) -> anyhow::Result<String> {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).map(|t| t + "\n");
    let want = expected.map(pretty).transpose()?.unwrap_or_default();
    let got = pretty(actual)?;
    let diff = similar::TextDiff::from_lines(&want, &got);
    Ok(diff
        .unified_diff()
        .context_radius(3)
        .header(header.0, header.1)
        .to_string())
}

/// Counts of one job, or of all.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
    updated: usize,
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn shown(project: &ProjectDirs, path: &Path) -> String {
    path.strip_prefix(&project.root)
        .unwrap_or(path)
        .display()
        .to_string()
}

pub async fn test(
    folder: &Path,
    update: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let set = match MappingSet::load_dir(folder) {
        Ok(set) => Arc::new(set),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let project = ProjectDirs::locate()?;
    let design = set.deployment.design.clone();
    // The jobs a deployment of this folder serves: per flow of its design,
    // the variant `[jobs]` names, else the flow's own job.
    let serving: Vec<(&str, String)> = bridge_flows::registry::all()
        .iter()
        .filter(|f| f.design.as_str() == design)
        .map(|f| (f.name, set.job_for(f.name).to_string()))
        .collect();
    let known = project.job_names()?;
    let mut problems = Vec::new();
    for choice in &set.jobs {
        if !known.contains(&choice.job) {
            problems.push(
                set.job_choice_error(
                    choice,
                    format!(
                        "no job `{}` in {} (known jobs: {}; make a variant with `bridge job new {} --from {}`)",
                        choice.job,
                        project.jobs_src().display(),
                        known.join(", "),
                        choice.job,
                        choice.flow
                    ),
                )
                .to_string(),
            );
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let names: Vec<String> = serving.iter().map(|(_, job)| job.clone()).collect();
    project.build_jobs(&names)?;
    let runtime = super::job_runtime(cache_dir)?;
    println!(
        "{} ({} design): {} job(s): {}",
        folder.display(),
        design,
        serving.len(),
        names.join(", ")
    );

    let mut total = Tally::default();
    let mut job_errors = 0usize;
    for (flow, job) in &serving {
        let loaded = Arc::new(runtime.load_file(&project.job_wasm(job)).await?);
        let job_dir = project.jobs_src().join(job);
        if loaded.info.flow != *flow {
            let message = format!(
                "job `{job}` serves flow `{}`, not `{flow}` (its describe().flow)",
                loaded.info.flow
            );
            match set.job_choice(flow) {
                Some(choice) => eprintln!("error: {}", set.job_choice_error(choice, message)),
                None => eprintln!("error: {message}"),
            }
            job_errors += 1;
            continue;
        }
        let settings = FixtureSettings::of_job(&job_dir)?;
        let cases = fixtures::fixtures_of(&job_dir)?;
        let written_for = project.mappings(&settings.mappings);
        let elsewhere = !same_folder(&written_for, folder);
        let note = if elsewhere {
            format!(" (fixtures written for {})", shown(&project, &written_for))
        } else {
            String::new()
        };
        let missing = set.missing_tables(&loaded.info.tables);
        if !missing.is_empty() {
            println!(
                "{job} (flow {flow}): FAILED: needs tables missing from {}: {}",
                folder.display(),
                missing.join(", ")
            );
            job_errors += 1;
            continue;
        }
        let mut instance = JobInstance::new(loaded.clone()).await?;
        if let Err(e) = instance.configure_with(set.clone()).await {
            println!(
                "{job} (flow {flow}): FAILED: refuses {}: {e}",
                folder.display()
            );
            job_errors += 1;
            continue;
        }
        if cases.is_empty() {
            println!(
                "{job} (flow {flow}): FAILED: no fixtures in {}",
                shown(&project, &job_dir.join(fixtures::FIXTURES_DIR))
            );
            job_errors += 1;
            continue;
        }
        let ctx = settings.context(&loaded.info.flow);
        let checked = fixtures::check(&mut instance, &ctx, cases).await;
        let mut tally = Tally::default();
        let mut lines = Vec::new();
        for c in &checked {
            if c.passed() {
                tally.passed += 1;
                continue;
            }
            let refusal = if !update {
                None
            } else if elsewhere {
                Some(format!(
                    "not updated: the fixtures of {job} are written for {} (`npm test` runs them there); set {{\"mappings\": \"<folder>\"}} in {} to write them for this folder",
                    shown(&project, &written_for),
                    shown(&project, &job_dir.join(fixtures::FIXTURES_DIR).join(fixtures::SETTINGS_FILE))
                ))
            } else {
                c.unwritable().map(|why| format!("not updated: {why}"))
            };
            match (update, refusal) {
                (true, None) => {
                    lines.push(updated(&project, c)?);
                    c.write_expected()?;
                    tally.updated += 1;
                }
                (_, refusal) => {
                    lines.push(failed(&project, c)?);
                    lines.extend(refusal.map(|r| format!("  {r}")));
                    tally.failed += 1;
                }
            }
        }
        let updated_note = if tally.updated > 0 {
            format!(", {} updated", tally.updated)
        } else {
            String::new()
        };
        println!(
            "{job} (flow {flow}): {} passed, {} failed{updated_note}{note}",
            tally.passed, tally.failed
        );
        for line in lines {
            println!("{line}");
        }
        total.passed += tally.passed;
        total.failed += tally.failed;
        total.updated += tally.updated;
    }
    let errors_note = if job_errors > 0 {
        format!(", {job_errors} job(s) not run")
    } else {
        String::new()
    };
    println!(
        "total: {} passed, {} failed, {} updated{errors_note}",
        total.passed, total.failed, total.updated
    );
    if total.updated > 0 {
        println!(
            "review the diffs above, then run `npm test --prefix jobs` (it checks the same files in node)"
        );
    }
    Ok(if total.failed == 0 && job_errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A failed fixture and its diff (what was compared: the expected outcome as
/// the host receives it, and the outcome).
fn failed(project: &ProjectDirs, c: &Checked) -> anyhow::Result<String> {
    let expected_path = shown(project, &c.fixture.expected_path);
    Ok(match &c.expected {
        None => format!(
            "  FAILED {}: no expected file {expected_path}; the outcome is\n{}",
            c.fixture.name,
            indent(&serde_json::to_string_pretty(&c.actual)?)
        ),
        Some(expected) => format!(
            "  FAILED {} (- expected {expected_path}, + actual)\n{}",
            c.fixture.name,
            indent(&diff(Some(expected), &c.actual, ("expected", "actual"))?)
        ),
    })
}

/// An updated fixture and the diff of its file.
fn updated(project: &ProjectDirs, c: &Checked) -> anyhow::Result<String> {
    let path = shown(project, &c.fixture.expected_path);
    let before = c.fixture.expected.as_ref();
    let header = if before.is_some() { "before" } else { "(none)" };
    Ok(format!(
        "  UPDATED {} ({path})\n{}",
        c.fixture.name,
        indent(&diff(before, &c.actual, (header, "after"))?)
    ))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

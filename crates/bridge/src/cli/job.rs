//! `bridge job …`, `bridge jobs …`, `bridge mappings …`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;

use bridge_mappings::MappingSet;
use bridge_runtime::reload::Serving;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{inspect_component, outcome_report, JobContext, JobInstance};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Dry-run one job on one record fixture and print the outcome as JSON.
    Run {
        /// Job name (built from jobs/<name>/ if needed) or a path to a .wasm component.
        job: String,
        /// The record bundle (JSON file).
        #[arg(long)]
        record: PathBuf,
        /// The country mapping folder, e.g. mappings/kenya-dadaab.
        #[arg(long)]
        mappings: PathBuf,
        /// Expected outcome; exit 1 with a diff when the output differs.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Today's date for the job (YYYY-MM-DD); fixtures use 2025-06-01.
        #[arg(long)]
        today: Option<String>,
        /// Flow name passed in the context (defaults to the job's own flow).
        #[arg(long)]
        flow: Option<String>,
    },
    /// Make a variant of a job for a country whose rules differ beyond its
    /// tables: jobs/<name>/, a copy of jobs/<from>/ with its fixtures, named
    /// <name>, version 0.1.0, the same flow. A deployment serves it where its
    /// deployment.toml names it: [jobs] "<flow>" = "<name>".
    New {
        /// The variant's name, e.g. ping-1.1-kakuma.
        name: String,
        /// The job it is made from, e.g. ping-1.1.
        #[arg(long)]
        from: String,
        /// The mapping folder (in the project's mappings/) its fixtures are
        /// written for from now on (fixtures/fixtures.json).
        #[arg(long)]
        mappings: Option<PathBuf>,
    },
    /// Run every fixture of every job serving a mapping folder (its design's
    /// jobs, with the variants its deployment.toml names) and print one
    /// summary; exit 1 when one fails.
    Test {
        /// The mapping folder, e.g. mappings/kenya-dadaab.
        folder: PathBuf,
        /// After a deliberate change: write each differing outcome as the
        /// fixture's expected file, and show the diff.
        #[arg(long)]
        update: bool,
    },
    /// Print what a component imports and exports, its SHA-256, and whether the host accepts it.
    Inspect {
        /// Path to a .wasm component.
        component: PathBuf,
        /// Also say whether this approvals file approves the component.
        #[arg(long)]
        approvals: Option<PathBuf>,
        /// One JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approve a component: append its SHA-256, name, version and imports to
    /// the approvals file `[jobs] require_approved` loads from.
    Approve {
        /// Path to the .wasm component reviewed.
        component: PathBuf,
        /// Who approves: an id (letters, digits and _.:/#-), not a name.
        #[arg(long)]
        by: String,
        /// The approvals file (created when missing).
        #[arg(long, default_value = "approvals.toml")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Build jobs/<name>/ into jobs/dist/<name>.wasm; unchanged jobs are skipped.
    Build {
        /// Only these jobs (default: all).
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MappingsCommand {
    /// Validate a mapping folder; errors name the file, line and key. With
    /// built jobs at hand it also checks the tables against what the
    /// deployment's jobs read (a missing table, a table no job reads).
    Check {
        dir: PathBuf,
        /// Folder of built job components (default: the project's jobs/dist).
        #[arg(long)]
        jobs: Option<PathBuf>,
        /// Report values marked `CHANGE-ME:` as warnings instead of errors
        /// (the shipped example folders; never for a folder going live).
        #[arg(long)]
        allow_placeholders: bool,
        /// Also show how the shared data points (sharing.toml) differ from
        /// this folder's: fields added, removed or changed per flow and destination.
        #[arg(long, value_name = "FOLDER")]
        against: Option<PathBuf>,
    },
    /// Make a mapping folder for a new country from an existing one: every
    /// deployment value is marked `CHANGE-ME:` (the old value after the
    /// mark), and a checklist says what to confirm and with whom.
    New(super::mappings_new::NewArgs),
    /// Render the data points the folder's flows may share (sharing.toml),
    /// with the mapping tables behind them: the annex of the Information
    /// Sharing Protocol.
    Manifest {
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "markdown")]
        format: super::sharing::Format,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{what} {} is not valid JSON", path.display()))
}

/// A job argument: a path to a component, or a job name to build.
fn resolve_job(job: &str) -> anyhow::Result<PathBuf> {
    let as_path = PathBuf::from(job);
    if job.ends_with(".wasm") || as_path.is_file() {
        anyhow::ensure!(
            as_path.is_file(),
            "job component {} does not exist",
            as_path.display()
        );
        return Ok(as_path);
    }
    let project = ProjectDirs::locate()?;
    anyhow::ensure!(
        project.jobs_src().join(job).join("index.js").is_file(),
        "no job named `{job}`: expected {}/index.js (known jobs: {})",
        project.jobs_src().join(job).display(),
        project.job_names()?.join(", ")
    );
    let built = project.build_jobs(&[job.to_string()])?;
    Ok(built.into_iter().next().expect("one job requested"))
}

pub async fn run_job_command(
    cmd: JobCommand,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Run {
            job,
            record,
            mappings,
            expect,
            today,
            flow,
        } => {
            let component = resolve_job(&job)?;
            let record_value = read_json(&record, "record")?;
            // The job's expected outcome as the host receives it (texts
            // reduced to codes, record values redacted).
            let expected = expect
                .as_deref()
                .map(|p| read_json(p, "expected outcome"))
                .transpose()?
                .map(|e| bridge_runtime::as_received(&e, &record_value.to_string()));
            let mappings = MappingSet::load_dir(&mappings)?;
            let runtime = super::job_runtime(cache_dir)?;
            let loaded = Arc::new(runtime.load_file(&component).await?);
            let missing = mappings.missing_tables(&loaded.info.tables);
            anyhow::ensure!(
                missing.is_empty(),
                "job {} needs mapping tables missing from {}: {}",
                loaded.name,
                mappings.dir.display(),
                missing.join(", ")
            );
            let ctx = JobContext {
                flow: flow.unwrap_or_else(|| loaded.info.flow.clone()),
                run_id: "dry-run".into(),
                today: today.unwrap_or_else(|| chrono::Local::now().format("%Y-%m-%d").to_string()),
                dry_run: true,
            };
            let mut instance = JobInstance::new(loaded).await?;
            instance.configure(mappings.job_json()).await?;
            let result = instance
                .run(
                    &ctx,
                    &record.display().to_string(),
                    &record_value.to_string(),
                )
                .await;
            let actual = outcome_report(&result);
            let pretty = serde_json::to_string_pretty(&actual)?;
            match expected {
                None => {
                    println!("{pretty}");
                    Ok(ExitCode::SUCCESS)
                }
                Some(expected) if expected == actual => {
                    println!(
                        "ok: {} matches {}",
                        record.display(),
                        expect.unwrap().display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(expected) => {
                    println!(
                        "MISMATCH: {} (- expected {}, + actual)",
                        record.display(),
                        expect.unwrap().display()
                    );
                    print!(
                        "{}",
                        super::job_test::diff(Some(&expected), &actual, ("expected", "actual"))?
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        JobCommand::Approve {
            component,
            by,
            file,
        } => super::approve::approve(&component, &by, &file, cache_dir).await,
        JobCommand::New {
            name,
            from,
            mappings,
        } => super::job_new::new(&name, &from, mappings.as_deref()),
        JobCommand::Test { folder, update } => {
            super::job_test::test(&folder, update, cache_dir).await
        }
        JobCommand::Inspect {
            component,
            approvals,
            json,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let runtime = super::job_runtime(cache_dir)?;
            let name = component
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "job".to_string());
            // The verdict is loading itself (linking, `describe` and its
            // checks), from the precompile cache when it holds the component;
            // only a refused one is compiled again to list what it imports.
            let started = std::time::Instant::now();
            let loaded = runtime.load_bytes(&name, &bytes).await;
            let load_ms = started.elapsed().as_millis();
            let report = match &loaded {
                Ok(job) => inspect_component(runtime.engine(), job.component()),
                Err(_) => {
                    let compiled = wasmtime::component::Component::new(runtime.engine(), &bytes)
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "{} is not a valid component: {e:#}",
                                component.display()
                            )
                        })?;
                    inspect_component(runtime.engine(), &compiled)
                }
            };
            let limits = runtime.limits();
            let hash = bridge_runtime::content_hash(&bytes);
            if json {
                let described = loaded.as_ref().ok().map(|job| {
                    serde_json::json!({
                        "name": job.info.name,
                        "version": job.info.version,
                        "flow": job.info.flow,
                        "tables": job.info.tables,
                    })
                });
                let out = serde_json::json!({
                    "component": component.display().to_string(),
                    "sha256": hash,
                    "accepted": loaded.is_ok(),
                    "refusal": loaded.as_ref().err().map(|e| e.to_string()),
                    "describe": described,
                    "imports": report.imports,
                    "exports": report.exports,
                    "limits": {
                        "call_timeout_ms": limits.call_timeout.as_millis() as u64,
                        "memory_bytes": limits.memory_bytes,
                        "recycle_after_records": limits.recycle_after_calls,
                        "pool_size": limits.pool_size,
                    },
                    "from_cache": loaded.as_ref().map(|j| j.from_cache).unwrap_or(false),
                    "load_ms": load_ms as u64,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(if loaded.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            println!("component: {}", component.display());
            println!("sha256: {hash}");
            println!("imports:");
            for i in &report.imports {
                println!("  {i}");
            }
            println!("exports:");
            for e in &report.exports {
                println!("  {e}");
            }
            println!(
                "limits: call timeout {} ms, memory {} MiB, fresh instance after {} records",
                limits.call_timeout.as_millis(),
                limits.memory_bytes / (1024 * 1024),
                limits.recycle_after_calls
            );
            if let Some(file) = &approvals {
                super::approve::print_approval(&bytes, file)?;
            }
            match loaded {
                Ok(job) => {
                    println!(
                        "describe: job {} {} for flow {}; tables: {}",
                        job.info.name,
                        job.info.version,
                        job.info.flow,
                        if job.info.tables.is_empty() {
                            "none".to_string()
                        } else {
                            job.info.tables.join(", ")
                        }
                    );
                    println!(
                        "loaded in {load_ms} ms ({})",
                        if job.from_cache {
                            "precompile cache"
                        } else {
                            "compiled, now cached"
                        }
                    );
                    println!(
                        "accepted: yes (imports only the bridge:job log and types): job {} {} for flow {}",
                        job.info.name, job.info.version, job.info.flow
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    for i in &report.forbidden_imports {
                        println!("refused: imports `{i}`, which the host does not provide");
                    }
                    for e in &report.missing_exports {
                        println!("refused: does not export `{e}`");
                    }
                    println!("refused: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

pub fn run_jobs_command(cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobsCommand::Build { names } => {
            let project = ProjectDirs::locate()?;
            for path in project.build_jobs(&names)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn run_mappings_command(
    cmd: MappingsCommand,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (dir, jobs, allow_placeholders, against) = match cmd {
        MappingsCommand::Manifest { dir, format, out } => {
            return super::sharing::manifest(&dir, format, out)
        }
        MappingsCommand::New(args) => return super::mappings_new::run(args),
        MappingsCommand::Check {
            dir,
            jobs,
            allow_placeholders,
            against,
        } => (dir, jobs, allow_placeholders, against),
    };
    let set = match MappingSet::check_dir(&dir) {
        Ok(set) => set,
        Err(problems) => {
            for e in &problems {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let jobs_dir = jobs.or_else(|| ProjectDirs::locate().ok().map(|p| p.jobs_dist()));
    let components = jobs_dir
        .as_deref()
        .and_then(|d| bridge_flows::app::job_files(d).ok())
        .unwrap_or_default();
    let mut errors = Vec::new();
    if components.is_empty() {
        eprintln!(
            "note: no built jobs found, so the tables were not checked against what the jobs read (build them with `bridge jobs build`)"
        );
    } else {
        let runtime = super::job_runtime(cache_dir)?;
        let shared_set = Arc::new(set.clone());
        let mut read: std::collections::BTreeSet<String> = bridge_flows::HOST_TABLES
            .iter()
            .map(|t| t.to_string())
            .collect();
        let mut loaded = Vec::with_capacity(components.len());
        for path in &components {
            loaded.push(runtime.load_file(path).await?);
        }
        // `[jobs]`: each variant named is built and serves its flow.
        let all: Vec<&bridge_runtime::LoadedJob> = loaded.iter().collect();
        errors.extend(
            bridge_runtime::reload::job_choice_problems(&all, &set, jobs_dir.as_deref())
                .iter()
                .map(ToString::to_string),
        );
        let mut served = std::collections::BTreeSet::new();
        for job in loaded {
            // Only the jobs a deployment of this folder serves: its design's,
            // with the variants it names in place of the flows' own.
            if bridge_runtime::reload::serving_of(&job, &set) != Serving::Serves {
                continue;
            }
            served.insert(job.info.flow.clone());
            let missing = set.missing_tables(&job.info.tables);
            for table in &missing {
                errors.push(format!(
                    "{}: missing table `{table}`, which job {} reads",
                    dir.display(),
                    job.name
                ));
            }
            read.extend(job.info.tables.iter().cloned());
            if missing.is_empty() {
                // The job's own checks of the folder (deployment values it
                // needs, table shapes): what a start would refuse.
                let job_name = job.name.clone();
                let configured = async {
                    let mut instance = bridge_runtime::JobInstance::new(Arc::new(job)).await?;
                    instance.configure_with(shared_set.clone()).await
                };
                if let Err(e) = configured.await {
                    errors.push(format!(
                        "{}: job {job_name} refuses the folder: {e}",
                        dir.display()
                    ));
                }
            }
        }
        // A table only a job not loaded here reads is not unknown.
        let unserved: Vec<String> = bridge_flows::registry::all()
            .iter()
            .filter(|f| f.design.as_str() == set.deployment.design)
            .filter(|f| !served.contains(f.name))
            .map(|f| format!("{} (job {})", f.name, set.job_for(f.name)))
            .collect();
        if unserved.is_empty() {
            errors.extend(set.unknown_tables(&read).iter().map(ToString::to_string));
        } else {
            eprintln!(
                "note: no built job serves flow {}; tables were not checked for being read by no job (`bridge jobs build`)",
                unserved.join(", ")
            );
        }
    }
    if let Err(e) = super::sharing::report(&set, against.as_deref()) {
        errors.push(e);
    }
    for p in &set.placeholders {
        if allow_placeholders {
            eprintln!("warning: {p}");
        } else {
            errors.push(p.to_string());
        }
    }
    if errors.is_empty() {
        println!(
            "ok: {} ({} tables, deployment {} / {})",
            dir.display(),
            set.tables.len(),
            set.deployment.country,
            set.deployment.design
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &errors {
            eprintln!("error: {e}");
        }
        Ok(ExitCode::FAILURE)
    }
}

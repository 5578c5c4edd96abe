//! `bridge bench`: the benchmark suite (issue 7). Measures, side by side in
//! one run, the job layer, the same mapping code on the OpenFn runtime, the
//! flows end to end against the simulators, how cost grows with work, the
//! state store on SQLite and PostgreSQL, and one against three replicas;
//! prints the figures and writes them to `bench/results.md`.
//!
//! Measurements that need a fresh process (cold start, peak RSS, the OpenFn
//! comparison) run in child processes: `bridge bench worker …` (hidden) and
//! `node bench/openfn/run.mjs`; the replicas part starts `bridge run`
//! processes. The simulators stay in this process, so a worker's peak RSS
//! is the bridge's alone.
//!
//! No figure here is asserted anywhere: the targets are reported as met or
//! not met.

mod bound;
mod calls;
mod cores;
mod openfn;
pub mod records;
mod replicas;
mod report;
mod sections;
mod state;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

pub use report::{Report, Section, Table, TargetRow};

use bridge_mappings::MappingSet;
use bridge_runtime::toolchain::ProjectDirs;

/// Which part of the suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Job,
    Openfn,
    E2e,
    Scaling,
    /// The state store on SQLite and PostgreSQL side by side.
    State,
    /// One and three `bridge run` replicas on PostgreSQL, and failover.
    Replicas,
}

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Small sizes only: exercises every code path in seconds (figures are not meaningful).
    pub quick: bool,
    pub only: Option<Part>,
    pub out: PathBuf,
    pub cache_dir: Option<PathBuf>,
    /// Records of one run worked on at once in the concurrent end-to-end runs.
    pub concurrency: usize,
    /// Calls in flight per partner in the concurrent end-to-end runs.
    pub max_in_flight: usize,
    /// Injected partner latency of the end-to-end section.
    pub latency: Duration,
    /// PING calls per second of the rate-limit run.
    pub rate_limit: f64,
    /// The `bridge` executable the workers run (this one).
    pub exe: PathBuf,
}

/// Country mappings the benchmarks use.
pub const COUNTRY: &str = "kenya-dadaab";

/// What every section shares.
pub(crate) struct Bench {
    pub opts: BenchOptions,
    pub project: ProjectDirs,
    pub mappings_dir: PathBuf,
    pub mappings: MappingSet,
    /// Scratch folder, removed at the end.
    pub tmp: PathBuf,
    pub started: Instant,
}

impl Bench {
    pub fn wants(&self, part: Part) -> bool {
        self.opts.only.is_none_or(|p| p == part)
    }

    /// Progress and figures as they come.
    pub fn say(&self, line: impl AsRef<str>) {
        println!(
            "[{:>6.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            line.as_ref()
        );
    }

    fn cache_args(&self) -> Vec<String> {
        match &self.opts.cache_dir {
            Some(d) => vec!["--cache-dir".into(), d.display().to_string()],
            None => Vec::new(),
        }
    }

    /// Run `bridge bench worker …` in a fresh process; its JSON and the wall
    /// time from spawn to exit.
    pub async fn worker(
        &self,
        args: &[String],
        env: &[(&'static str, String)],
    ) -> anyhow::Result<(Value, Duration)> {
        // `BRIDGE_BENCH_WORKER_PREFIX="heaptrack -o /tmp/w"` runs each
        // worker under a profiler (the figures are then the profiler's).
        let prefix: Vec<String> = std::env::var("BRIDGE_BENCH_WORKER_PREFIX")
            .map(|p| p.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(rest).arg(&self.opts.exe);
                cmd
            }
            None => tokio::process::Command::new(&self.opts.exe),
        };
        cmd.args(self.cache_args())
            .args(["bench", "worker"])
            .args(args)
            .envs(env.iter().cloned());
        spawn_json(cmd, "bridge bench worker").await
    }

    /// Run `bridge <args>` in a fresh process (exit status and stdout kept).
    pub async fn bridge(
        &self,
        args: &[String],
        env: &[(&'static str, String)],
    ) -> anyhow::Result<(std::process::Output, Duration)> {
        let mut cmd = tokio::process::Command::new(&self.opts.exe);
        cmd.args(self.cache_args())
            .args(args)
            .envs(env.iter().cloned())
            .current_dir(&self.tmp)
            .stdin(std::process::Stdio::null());
        let t = Instant::now();
        let out = cmd.output().await.context("cannot start bridge")?;
        Ok((out, t.elapsed()))
    }

    /// `node --experimental-vm-modules bench/openfn/run.mjs <args>`.
    pub async fn openfn(&self, args: &[String]) -> anyhow::Result<(Value, Duration)> {
        let dir = self.openfn_dir();
        let mut cmd = tokio::process::Command::new("node");
        cmd.args(["--experimental-vm-modules", "--no-warnings", "run.mjs"])
            .args(args)
            .current_dir(&dir);
        spawn_json(cmd, "node bench/openfn/run.mjs").await
    }

    pub fn openfn_dir(&self) -> PathBuf {
        self.project.root.join("bench").join("openfn")
    }

    /// `npm ci` in bench/openfn when @openfn/runtime is not installed yet.
    pub fn ensure_openfn(&self) -> anyhow::Result<()> {
        let dir = self.openfn_dir();
        if dir
            .join("node_modules/@openfn/runtime/package.json")
            .is_file()
        {
            return Ok(());
        }
        self.say("installing @openfn/runtime and @openfn/language-common (npm ci in bench/openfn)");
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .context("cannot run npm: install Node.js 20.6+ with npm")?;
        anyhow::ensure!(status.success(), "npm ci failed in {}", dir.display());
        Ok(())
    }
}

async fn spawn_json(
    mut cmd: tokio::process::Command,
    what: &str,
) -> anyhow::Result<(Value, Duration)> {
    cmd.stdin(std::process::Stdio::null());
    let t = Instant::now();
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot start {what}"))?;
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        tail(&stderr, 2000)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON:\n{}", tail(&stderr, 2000)))?;
    let value = serde_json::from_str(line).with_context(|| format!("{what}: {line}"))?;
    Ok((value, wall))
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Run the suite (or the part asked for) and write the report.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Report> {
    let project = ProjectDirs::locate()?;
    let started = Instant::now();
    println!("bridge bench: building the jobs if needed…");
    project.build_jobs(&[])?;
    let mappings_dir = project.mappings(COUNTRY);
    let mappings = MappingSet::load_dir(&mappings_dir)?;
    let tmp = std::env::temp_dir().join(format!("bridge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let bench = Bench {
        opts,
        project,
        mappings_dir,
        mappings,
        tmp,
        started,
    };
    let result = sections::run_all(&bench).await;
    let _ = std::fs::remove_dir_all(&bench.tmp);
    let report = result?;
    let markdown = report.markdown();
    if let Some(parent) = bench.opts.out.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(&bench.opts.out, &markdown)
        .with_context(|| format!("cannot write {}", bench.opts.out.display()))?;
    println!();
    println!("{markdown}");
    println!(
        "wrote {} in {:.0} s",
        bench.opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

/// The machine and versions, for the report's header.
pub(crate) fn environment(root: &Path, quick: bool) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not found".into());
    let openfn = std::fs::read_to_string(
        root.join("bench/openfn/node_modules/@openfn/runtime/package.json"),
    )
    .ok()
    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    .and_then(|v| v["version"].as_str().map(str::to_string))
    .unwrap_or_else(|| "not installed".into());
    let common = std::fs::read_to_string(
        root.join("bench/openfn/node_modules/@openfn/language-common/package.json"),
    )
    .ok()
    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    .and_then(|v| v["version"].as_str().map(str::to_string))
    .unwrap_or_else(|| "not installed".into());
    let mut env = vec![
        (
            "date".to_string(),
            chrono::Local::now().format("%Y-%m-%d %H:%M %z").to_string(),
        ),
        ("cores (nproc)".into(), cores),
        // Other work on the machine slows both sides, and the bridge's pool
        // of instances most: it shows how quiet the run was.
        (
            "load average at start (1, 5, 15 min)".into(),
            std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
                .unwrap_or_else(|| "unknown".into()),
        ),
        ("CPU".into(), cpu),
        (
            "bridge".into(),
            format!(
                "{} ({} build)",
                env!("CARGO_PKG_VERSION"),
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            ),
        ),
        (
            "wasmtime".into(),
            lock_version(root, "wasmtime").unwrap_or_else(|| "unknown".into()),
        ),
        ("node".into(), node),
        ("@openfn/runtime".into(), openfn),
        ("@openfn/language-common".into(), common),
    ];
    if quick {
        env.push((
            "mode".into(),
            "--quick: small sizes, a smoke run; the figures are not meaningful".into(),
        ));
    }
    env
}

/// A package's version in the workspace's Cargo.lock.
fn lock_version(root: &Path, name: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{name}\"\n");
    let at = lock.find(&needle)? + needle.len();
    let line = lock[at..].lines().next()?;
    line.strip_prefix("version = \"")
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
}

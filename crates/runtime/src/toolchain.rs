//! Building the JavaScript jobs into components (`jobs/build.mjs`, via node and
//! componentize-js from npm), and finding the project's folders.
//!
//! Several test binaries may ask for the jobs at once; a file lock makes one of
//! them build while the others wait and then find everything up to date.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the project's `jobs/`, `mappings/` and `wit/` live.
#[derive(Debug, Clone)]
pub struct ProjectDirs {
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("`{tool}` was not found on PATH: install Node.js 20.6 or newer with npm (e.g. `apt-get install nodejs npm`) to build the JavaScript jobs")]
    Missing { tool: &'static str },
    #[error("`{command}` failed in {dir} (exit {code:?}); its output is above")]
    Failed {
        command: String,
        dir: PathBuf,
        code: Option<i32>,
    },
    #[error("no job named `{name}`: a job is a folder jobs/<name>/ with an index.js (known jobs: {known})")]
    UnknownJob { name: String, known: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot find the project folder (with jobs/build.mjs and wit/job.wit); set BRIDGE_PROJECT_DIR or run from the project")]
    NoProject,
}

impl ProjectDirs {
    /// `$BRIDGE_PROJECT_DIR`, else the nearest ancestor of the current folder
    /// holding `wit/job.wit`, else the source tree this binary was built from.
    pub fn locate() -> Result<Self, ToolchainError> {
        let is_root = |p: &Path| p.join("wit/job.wit").is_file() && p.join("jobs").is_dir();
        if let Some(dir) = std::env::var_os("BRIDGE_PROJECT_DIR") {
            let root = PathBuf::from(dir);
            return if is_root(&root) {
                Ok(Self { root })
            } else {
                Err(ToolchainError::NoProject)
            };
        }
        if let Ok(cwd) = std::env::current_dir() {
            if let Some(root) = cwd.ancestors().find(|p| is_root(p)) {
                return Ok(Self {
                    root: root.to_path_buf(),
                });
            }
        }
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        if is_root(&built_from) {
            return Ok(Self {
                root: built_from.canonicalize()?,
            });
        }
        Err(ToolchainError::NoProject)
    }

    pub fn jobs_src(&self) -> PathBuf {
        self.root.join("jobs")
    }

    pub fn jobs_dist(&self) -> PathBuf {
        self.root.join("jobs/dist")
    }

    pub fn job_wasm(&self, name: &str) -> PathBuf {
        self.jobs_dist().join(format!("{name}.wasm"))
    }

    pub fn mappings(&self, country: &str) -> PathBuf {
        self.root.join("mappings").join(country)
    }

    /// Names of the jobs in `jobs/` (folders with an `index.js`).
    pub fn job_names(&self) -> Result<Vec<String>, ToolchainError> {
        let mut names: Vec<String> = std::fs::read_dir(self.jobs_src())?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("index.js").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .filter(|n| !matches!(n.as_str(), "lib" | "test" | "dist" | "node_modules"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Build every job whose sources changed (install npm dependencies first
    /// when missing). Output of node goes to this process's stderr so a person
    /// sees progress; returns the built component paths.
    pub fn build_jobs(&self, only: &[String]) -> Result<Vec<PathBuf>, ToolchainError> {
        let jobs = self.jobs_src();
        let known = self.job_names()?;
        if let Some(unknown) = only.iter().find(|n| !known.contains(n)) {
            return Err(ToolchainError::UnknownJob {
                name: unknown.clone(),
                known: known.join(", "),
            });
        }
        std::fs::create_dir_all(self.jobs_dist())?;
        let lock = File::create(self.jobs_dist().join(".build.lock"))?;
        lock.lock()?;

        which("node")?;
        if !jobs
            .join("node_modules/@bytecodealliance/componentize-js")
            .is_dir()
        {
            which("npm")?;
            eprintln!("jobs: installing npm dependencies (npm ci)…");
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&jobs))?;
        }
        run(Command::new("node")
            .arg("build.mjs")
            .args(only)
            .current_dir(&jobs))?;
        let names = if only.is_empty() {
            self.job_names()?
        } else {
            only.to_vec()
        };
        Ok(names.iter().map(|n| self.job_wasm(n)).collect())
    }
}

fn which(tool: &'static str) -> Result<(), ToolchainError> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(ToolchainError::Missing { tool })
    }
}

fn run(cmd: &mut Command) -> Result<(), ToolchainError> {
    // Child output goes to stderr: stdout of `bridge` stays machine-readable.
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(ToolchainError::Failed {
            command: format!("{cmd:?}"),
            dir: cmd
                .get_current_dir()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            code: status.code(),
        })
    }
}

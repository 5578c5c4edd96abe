//! Errors of the job runtime.

use std::path::PathBuf;
use std::time::Duration;

/// A job version could not be loaded; the previous version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read job component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("job {job}: not a valid WebAssembly component: {reason}")]
    Compile { job: String, reason: String },
    #[error("job {job}: refused: it imports `{import}`; a job may import only {allowed}")]
    ForbiddenImport {
        job: String,
        import: String,
        allowed: String,
    },
    #[error("job {job}: does not implement the bridge:job world: {reason}")]
    WrongWorld { job: String, reason: String },
    #[error("job {job}: describe() failed: {reason}")]
    Describe { job: String, reason: String },
    #[error("job {job}: needs mapping table `{table}`, which the mappings do not define")]
    MissingTable { job: String, table: String },
    #[error("job {job}: refused the mappings: {reason}")]
    Configure { job: String, reason: String },
    #[error("job {job}: refused as a new version: {reason}; the serving version stays")]
    NotAReplacement { job: String, reason: String },
    /// `[jobs] require_approved` is on and the component's hash is not in
    /// the approvals file (the reason names the file and the hash).
    #[error("job {job}: refused: {reason}")]
    NotApproved { job: String, reason: String },
    #[error("job {job} is not loaded (no such component, it serves the other design, or deployment.toml [jobs] names another job for its flow)")]
    NotLoaded { job: String },
    #[error("precompile cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

/// Why one record failed inside a job. Always names the job; the flow adds the
/// record id. Reasons never contain field values other than codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobFailure {
    #[error("job {job}: bad input in field `{field}`: {reason}")]
    BadInput {
        job: String,
        field: String,
        reason: String,
    },
    #[error("job {job}: value `{value}` is not in mapping table `{table}`")]
    Unmapped {
        job: String,
        table: String,
        value: String,
    },
    #[error("job {job}: {message}")]
    Fatal { job: String, message: String },
    #[error("job {job}: stopped after {after:?} (time limit)")]
    Timeout { job: String, after: Duration },
    #[error("job {job}: stopped at the memory limit of {limit} bytes")]
    MemoryLimit { job: String, limit: usize },
    #[error("job {job}: trapped: {reason}")]
    Trap { job: String, reason: String },
    #[error("job {job}: returned output that is not valid JSON: {reason}")]
    InvalidOutput { job: String, reason: String },
}

impl JobFailure {
    /// Short machine-readable code for the state store and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            JobFailure::BadInput { .. } => "bad-input",
            JobFailure::Unmapped { .. } => "unmapped",
            JobFailure::Fatal { .. } => "job-fatal",
            JobFailure::Timeout { .. } => "job-timeout",
            JobFailure::MemoryLimit { .. } => "job-memory-limit",
            JobFailure::Trap { .. } => "job-trap",
            JobFailure::InvalidOutput { .. } => "job-invalid-output",
        }
    }
}

//! The job runtime: one wasmtime engine per process, components precompiled to
//! an on-disk cache, deny-by-default linking, per-call time and memory limits,
//! and atomic hot reload of jobs and mappings.

pub mod approvals;
pub mod bindings;
mod cache;
mod engine;
mod error;
pub mod fixtures;
mod instance;
pub mod job_text;
mod policy;
mod pool;
pub mod reload;
pub mod toolchain;
pub mod variant;

pub use approvals::{ApprovalGate, Approvals};
pub use cache::PrecompileCache;
pub use engine::{content_hash, default_pool_size, JobRuntime, Limits, LoadedJob, RuntimeConfig};
pub use error::{JobFailure, LoadError};
pub use instance::{
    as_received, outcome_report, JobContext, JobInstance, JobOutcome, MAX_RECORDS_PER_CALL,
};
pub use policy::{inspect_component, ComponentReport, ALLOWED_IMPORTS};
pub use pool::JobPool;

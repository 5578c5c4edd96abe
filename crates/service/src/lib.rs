//! The deployment: `bridge.toml` (parsed and validated in [`config`], then
//! built into an App in [`build`]), and `bridge run`, the long-running
//! service (scheduler, inbox, hot reload, metrics) in one process.
//!
//! - [`config`]: the file, every problem at once, naming file, line and key.
//! - [`build`]: the App of a validated config (clients, runtime, state).
//! - [`check`]: `bridge config check`.
//! - [`doctor`]: `bridge doctor`, read-only checks against the partners.
//! - [`schedule`]: cron per flow, one run of a flow at a time, missed runs.
//! - [`run`]: wiring everything together, and the graceful stop.
//! - [`shutdown`]: signals: stop, reload.
//! - [`retention`]: the audit trail's daily pruning.
//! - [`cluster_limits`]: partner limits held for every replica together.

pub mod alerts;
pub mod build;
pub mod check;
pub mod cluster_limits;
pub mod config;
pub mod doctor;
pub mod inbox;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod shutdown;

pub use run::{run, RunOptions, RunSummary};

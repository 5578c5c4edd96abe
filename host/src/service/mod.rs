//! `bridge run`: the long-running service (scheduler, inbox, hot reload,
//! metrics) in one process.
//!
//! - [`schedule`]: cron per flow, one run of a flow at a time, missed runs.
//! - [`run`]: wiring everything together, and the graceful stop.
//! - [`shutdown`]: SIGTERM / Ctrl-C.
//! - [`check`]: `bridge config check`, every problem of a config at once.

pub mod check;
pub mod run;
pub mod schedule;
pub mod shutdown;

pub use run::{run, RunOptions, RunSummary};

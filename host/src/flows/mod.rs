//! The flows: the ordered steps of each exchange (fetch → job → write →
//! acknowledge), one module per flow. Flows own no transform logic: that is
//! the job's. They own the order of side effects and the per-record outcome.

pub mod ping_referral_to_primero;
pub mod report;
pub mod rows;

pub use report::{RecordOutcome, RecordReport, RunReport};

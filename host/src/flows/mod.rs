//! The flows: the ordered steps of each exchange (fetch → job → write →
//! acknowledge), one module per flow. Flows own no transform logic: that is
//! the job's. They own the order of side effects and the per-record outcome.

pub mod case_lookup;
pub mod case_scan;
pub mod case_upsert;
pub mod dtp_decision_to_dtp;
pub mod dtp_decision_to_primero;
pub mod dtp_referral_to_dtp;
pub mod dtp_referral_to_primero;
pub mod ledger;
pub mod outbound_referrals;
pub mod outgoing_decisions;
pub mod ping_decision_to_primero;
pub mod ping_decision_to_progres;
pub mod ping_referral_to_primero;
pub mod ping_referral_to_progres;
pub mod referral_decision;
pub mod report;
pub mod rows;

pub use report::{RecordOutcome, RecordReport, RunReport};

/// Mapping tables the host's flows read themselves (not through a job).
pub const HOST_TABLES: &[&str] = &[dtp_referral_to_primero::FAIL_REASONS_TABLE];

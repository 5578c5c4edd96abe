//! The flows: the ordered steps of each exchange (fetch → job → write →
//! acknowledge), one module per flow, and the [`registry`] that lists them.
//! Flows own no transform logic: that is the job's. They own the order of
//! side effects and the per-record outcome.
//!
//! A flow is one module here (named for the flow: `ping-1.1` is
//! `ping_1_1`), declaring its [`registry::FlowSpec`]; one line in `flows!`
//! below; and its job folder `jobs/<name>/`.

pub mod app;
pub mod audit_trail;
pub mod case_lookup;
pub mod case_scan;
pub mod case_upsert;
pub mod consent;
pub mod consent_watch;
pub mod gates;
pub mod lease;
pub mod ledger;
pub mod outbound_referrals;
pub mod outgoing_decisions;
pub mod pushed;
pub mod referral_decision;
pub mod registry;
pub mod rejected_open;
pub mod report;
pub mod rows;
pub mod sharing_check;

pub use app::App;
pub use registry::FlowSpec;
pub use report::{RecordOutcome, RecordReport, RunReport};

/// Declares the flow modules and [`FLOWS`], in the order `bridge` lists them.
macro_rules! flows {
    ($($(#[$doc:meta])* $module:ident),* $(,)?) => {
        $($(#[$doc])* pub mod $module;)*

        /// Every flow: the registry's one list.
        pub const FLOWS: &[&FlowSpec] = &[$(&$module::SPEC),*];
    };
}

flows! {
    /// PING 1.1: proGres referral → Primero case.
    ping_1_1,
    /// PING 2.1: Primero referral → proGres.
    ping_2_1,
    /// DTP 2-1/2-2: Primero referral → proGres via DTP.
    dtp_2_1,
    /// PING 1.2: Primero decision on a proGres referral → proGres.
    ping_1_2,
    /// PING 2.2: proGres decision on a Primero referral → Primero.
    ping_2_2,
    /// DTP 1-2: Primero decision on a proGres referral → DTP.
    dtp_1_2,
    /// DTP 1-1 (+1-3/1-4): proGres referral pushed by DTP → Primero case.
    dtp_1_1,
    /// DTP 2-3: proGres decision pushed by DTP → Primero referral.
    dtp_2_3,
}

/// Mapping tables the host's flows read themselves (not through a job).
pub const HOST_TABLES: &[&str] = &[dtp_1_1::FAIL_REASONS_TABLE];

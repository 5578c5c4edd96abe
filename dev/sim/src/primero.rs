//! In-memory simulator of the Primero v2 API (the parts the flows use, spec
//! §2): Basic auth, and a login that behaves as the configured version's
//! ([`SimPrimeroVersion`]: v2.10's JWT or v2.11's cookie session with CSRF),
//! case query/create/patch with subform merge,
//! referrals with their state machine, users, plus knobs for tests (request
//! counters, latency, an in-flight high-water mark, arrival times, a write
//! hook, and per-endpoint faults for the next N matching requests: statuses
//! with or without `Retry-After`, raw bodies, stalls, hangups before or after
//! processing, truncated answers, repeated or skipped pages, no-op PATCHes,
//! token expiry).
//!
//! Records are kept as JSON objects because Primero's case schema is open
//! (every deployment adds fields); the simulator only interprets the fields
//! the API semantics depend on.

mod auth;
mod cases;
mod config;
mod faults;
mod fields;
mod flags;
mod knobs;
mod merge;
mod query;
mod records;
mod referrals;
mod reopen;
mod role;
mod server;
mod state;
#[cfg(test)]
mod tests;
mod users;
mod wire;

pub use cases::{case_for_person, CP_MODULE};
pub use config::{PrimeroSimConfig, SimPrimeroVersion};
pub(crate) use faults::{hangup_response, truncate_response, InFlight};
pub use faults::{Fault, FaultRule, WriteHook};
pub use flags::SimFlag;
pub use knobs::ReceivedWrite;
pub use merge::{merge_record, merge_subform};
pub use records::{NewSimReferral, ReferralStatus, SimReferral, SimReferralDecision, SimUser};
pub use role::SimRole;
pub use server::RunningPrimeroSim;
pub use state::PrimeroSim;
pub use wire::SimError;

//! `bridge demo` and `bridge sim`: the simulators started together, the seeded
//! scenarios and both designs' round trips. A developer tool: the production
//! binary does not contain it.

pub mod consent;
pub mod dtp_trial;
pub mod round_trip;
pub mod scenario;

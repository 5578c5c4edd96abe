//! In-memory simulators of the partner systems (Primero v2, PING), seeded with
//! generated people. Used by `bridge demo`, `bridge sim` and the tests; never a
//! real person in them.

pub mod arrivals;
pub mod dtp;
pub mod latency;
pub mod people;
pub mod ping;
pub mod primero;

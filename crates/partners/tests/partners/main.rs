//! The partner clients against the simulators over 127.0.0.1: one test
//! binary for the crate, one module per concern.

mod faults;
mod ping;
mod primero;
mod transport;

//! What the tests of every crate share, so that a helper is written once:
//! job components written in WAT ([`wat`]), running the `bridge` binary
//! from async tests ([`cli`]), looking for personal data in what the
//! bridge wrote ([`personal`]), a real PostgreSQL ([`postgres`]) and several
//! `bridge run` replicas ([`replicas`]).

pub mod cli;
pub mod personal;
pub mod postgres;
pub mod replicas;
pub mod wat;

//! What the tests of every crate share, so that a helper is written once:
//! job components written in WAT ([`wat`]), running the `bridge` binary
//! from async tests ([`cli`]) and looking for personal data in what the
//! bridge wrote ([`personal`]).

pub mod cli;
pub mod personal;
pub mod wat;

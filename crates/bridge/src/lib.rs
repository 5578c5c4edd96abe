//! The `bridge` command: argument parsing and output over the service crates.
//! Everything it does is done by a library crate; this crate only wires the
//! command line to them (see `docs/contributing.md` for the crate graph).

pub mod cli;

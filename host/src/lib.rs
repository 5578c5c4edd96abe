//! referral bridge host: everything with side effects lives here; the transform
//! and filter logic of each flow runs in a sandboxed WebAssembly job component.
//!
//! - [`runtime`]: wasmtime engine, precompile cache, limits, hot reload of jobs.
//! - [`mappings`]: country mapping tables (data only), validated on load.
//! - [`connectors`]: API clients, one module per external system.
//! - [`flows`]: the ordered steps of each flow (fetch → job → write → acknowledge).
//! - [`sim`]: in-memory simulators of the partner systems, for the demo and tests.
//! - [`store`]: durable state (runs, cursors, attempts, dead letter, sealed inbox).
//! - [`service`]: `bridge run`, the scheduler and shutdown.
//! - [`telemetry`]: logs (scrubbed) and metrics.
//! - [`cli`]: the `bridge` command.

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod doctor;
pub mod flows;
pub mod inbox;
pub mod limits;
pub mod mappings;
pub mod round_trip;
pub mod runtime;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod toolchain;

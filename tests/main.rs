//! The end-to-end suite: the real `bridge` binary and the library crates
//! together, against the simulators over loopback. One test binary (it links
//! everything once); each module is one concern.

mod approvals;
mod audit_trail;
mod bench_smoke;
mod console;
mod deploy;
mod doctor;
mod durable;
mod e2e;
mod e2e_consent;
mod e2e_cutover;
mod e2e_dtp_flows;
mod e2e_dtp_inbox;
mod e2e_ping_decisions;
mod e2e_ping_referrals_to_progres;
mod e2e_round_trips;
mod e2e_sharing;
mod e2e_variants;
mod failover;
mod fault_matrix;
mod job_fixtures;
mod mappings_cli;
mod monitoring;
mod partner_sessions;
mod report_rejected_open;
mod rotation;
mod service;
mod sim_dtp;
mod state_postgres;
mod telemetry;

//! In-memory simulator of UNHCR's PING middleware (design B), served by axum.
//!
//! It reproduces the wire formats of spec §3.2 and examples 13–20: the B2C
//! password-grant token endpoint, `retrievedatawithpaging` (SHP-2747, SHP-2358,
//! SHP-2795, SHP-2796), sync ingestion (SHP-2748, SHP-2284), async ingestion
//! (SHP-2731) and check status, with APIM-style 401s. Tests seed and inspect
//! it through plain methods on [`PingSim`].
//!
//! Choices where the real PING is undocumented:
//! - Paging: the cookie is accepted at the top level (`PagingCookie`, with an
//!   optional `PageNumber` that must match) or inside `PagingSummary`. Each
//!   retrieve is snapshotted when its first page is served, so later pages
//!   never skip or repeat rows; cookies stay valid so a retried page works.
//!   `RecordCount` counts the rows of the page; `PageNumber` starts at 0.
//! - Absent values (no language, no specific need, no rejection reason) are
//!   omitted from rows, as Dataverse omits null attributes.
//! - Sync ingestion answers 200 with
//!   `{"SPHTransactionId", "ErrorMessage": null, "RecordCount", "Data": [{"ExternalId", "Status": "Success"|"Failed", "Message"}]}`;
//!   a record that names an unknown key is `Failed`, the others still apply.
//! - Check status answers `{"Data": "<malformed string>"}` exactly as example 19
//!   (other shapes PING sends: [`FaultKind::CheckStatus`]).
//!
//! Fault knobs ([`FaultKind`]) apply to the next N requests on a path prefix,
//! in the same shape as the Primero and DTP simulators'.

mod auth;
mod check_status;
mod config;
mod driving;
mod faults;
mod ingest;
mod model;
mod retrieve;
mod rows;
mod server;
mod state;
#[cfg(test)]
mod tests;
mod wire;

pub use config::{PingSimConfig, ShippingProcesses};
pub use faults::{FaultKind, StatusShape};
pub use model::{
    InteropReferralState, InterventionState, PendingRowShape, ReceivedBody, ReceivedIngestion,
    ReceivedRequest, SimIntervention, SpecificNeed, INTEROP_STATUS_NEW, TRANSFER_STATUS_PENDING,
};
pub use server::RunningPingSim;
pub use state::PingSim;
pub use wire::{Row, CHECK_STATUS_PATH, NO_DATA, RETRIEVE_PATH, TOKEN_PATH};

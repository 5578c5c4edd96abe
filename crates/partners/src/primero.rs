//! Client for the Primero v2 API (spec §2): cases, services, referrals, users.
//!
//! Auth is HTTP Basic (every Primero v2 version; the production mode) or,
//! for Primero up to v2.10 only, the JWT that `POST /api/v2/tokens` hands out
//! in its `Authorization` answer header; a token is refreshed before it
//! expires (its `exp` claim) and once more on a 401. v2.11 removed tokens: a
//! login answered without one is an auth error saying to use Basic. Paging follows
//! `metadata` until `page >= ceil(total / per)` with `per` ≤ 1000 (Primero's
//! cap), so no record is lost above the cap.
//!
//! Errors name the endpoint by its path template (`GET /api/v2/cases/{id}`),
//! never the query string, which may hold an individual number.

pub mod section;

mod auth;
mod cases;
mod client;
mod config;
mod errors;
mod paging;
mod query;
mod records;
mod referrals;
mod users;
mod wire;

pub use cases::CasePager;
pub use client::PrimeroClient;
pub use config::{
    refresh_margin, PrimeroAuth, PrimeroConfig, PrimeroConfigError, DEFAULT_TOKEN_LIFETIME,
};
pub use paging::Page;
pub use query::{CaseOrderBy, CaseQuery, SortOrder, MAX_PER};
pub use records::{
    Case, Flag, NewFlag, NewReferral, Referral, ReferralStatus, ReferralUpdate, Service, User,
};

//! Client for UNHCR's PING middleware (PRIMES PING, Azure APIM), design B.
//!
//! Wire formats are copied from the original jobs byte for byte, including the
//! inconsistent `InteropID` (retrieve, async ingestion, check status) versus
//! `InteropId` (sync ingestion) casing.
//!
//! Paging (an assumption, the original never paged): a continuation request
//! repeats the first request and adds the `PagingCookie` and the next
//! `PageNumber` at the top level of the body.

pub mod section;

mod auth;
mod check_status;
mod client;
mod config;
mod errors;
mod ingest;
mod lenient;
mod page;
mod records;
mod retrieve;
mod wire;

pub use auth::refresh_margin;
pub use check_status::parse_check_status;
pub use client::PingClient;
pub use config::{PingConfig, PingConfigError, DEFAULT_SCOPE};
pub use page::PackedRows;
pub use records::{
    AsyncIngestionRecord, Attachment, Field, IngestionRecord, IngestionResponse, IngestionResult,
    IngestionStatus, Row, StatusParseError,
};
pub use retrieve::{PageCursor, RetrievePage, RetrievePager};
pub use wire::{
    CHECK_STATUS_PATH, INGEST_ASYNC_PATH_TEMPLATE, INGEST_PATH_TEMPLATE, NO_DATA, RETRIEVE_PATH,
};

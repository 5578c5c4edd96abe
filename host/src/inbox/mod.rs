//! The inbox DTP pushes to (design A).
//!
//! CONTRACT (stable): messages are accepted over HTTP, sealed and stored
//! durably, answered 202 with a receipt id, then handed to an [`InboxHandler`]
//! per kind.
//!
//! - [`http`]: `POST /dtp/inbox` (API key, size, JSON and field checks, sealing).
//! - [`processor`]: opens stored messages and hands them to their handler.
//! - [`dispatch`]: routes a message to the flow registered for its kind.
//! - [`conn`]: connections: HTTP/1.1 only, a cap, header and idle deadlines.
//! - [`serve`]: the server and the worker together, with graceful shutdown.

pub mod conn;
pub mod dispatch;
pub mod http;
pub mod processor;
pub mod serve;
pub mod validate;

pub use conn::ConnectionLimits;
pub use dispatch::Dispatcher;
pub use http::{router, InboxState, API_KEY_HEADER, DEFAULT_MAX_BODY_BYTES, INBOX_PATH};
pub use processor::{Disposition, InboxProcessor, InboxSummary, MessageOutcome};
pub use serve::{serve, ServeOptions};

use async_trait::async_trait;
use serde_json::Value;

use crate::flows::RunReport;

/// Routing on the body's top-level `request_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboxKind {
    /// proGres referral → Primero (flow 1-1).
    PrimeroOutgoingReferral,
    /// proGres decision on a Primero referral → Primero (flow 2-3).
    PrimeroIncomingReferralDecision,
}

impl InboxKind {
    pub fn request_type(self) -> &'static str {
        match self {
            InboxKind::PrimeroOutgoingReferral => "PrimeroOutgoingReferral",
            InboxKind::PrimeroIncomingReferralDecision => "PrimeroIncomingReferralDecision",
        }
    }

    /// The flow that handles this kind (its attempts and dead letter).
    pub fn flow(self) -> &'static str {
        match self {
            InboxKind::PrimeroOutgoingReferral => crate::flows::dtp_referral_to_primero::FLOW,
            InboxKind::PrimeroIncomingReferralDecision => {
                crate::flows::dtp_decision_to_primero::FLOW
            }
        }
    }

    pub fn from_request_type(s: &str) -> Option<Self> {
        match s {
            "PrimeroOutgoingReferral" => Some(InboxKind::PrimeroOutgoingReferral),
            "PrimeroIncomingReferralDecision" => Some(InboxKind::PrimeroIncomingReferralDecision),
            _ => None,
        }
    }
}

/// Why handling a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again later (partner unavailable): the message is kept.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will not succeed by retrying; the sender was told where possible.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    /// A message of `got` kind routed to a flow that handles only `handles`.
    pub fn wrong_kind(flow: &str, handles: InboxKind, got: InboxKind) -> Self {
        HandlerError::Permanent(format!(
            "flow {flow} handles {} messages, not {}",
            handles.request_type(),
            got.request_type()
        ))
    }
}

/// Processes one accepted message. Implemented by the flows of design A.
#[async_trait]
pub trait InboxHandler: Send + Sync {
    async fn handle(
        &self,
        kind: InboxKind,
        receipt_id: &str,
        body: &Value,
        today: &str,
    ) -> Result<RunReport, HandlerError>;
}

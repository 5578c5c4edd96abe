//! Messages a partner pushes (design A: DTP to the inbox): their kinds, and
//! the handler a flow of intake [`Intake::Pushed`](crate::registry::Intake)
//! gives for its kind. The inbox crate receives and stores the messages; the
//! flows handle them.

use async_trait::async_trait;
use serde_json::Value;

use crate::RunReport;

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

    /// The flow that handles this kind (its attempts and dead letter), as
    /// the registry says.
    pub fn flow(self) -> &'static str {
        crate::registry::handling(self)
            .map(|spec| spec.name)
            .expect("every message kind has a flow in the registry")
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

//! Messages a partner pushes (design A: DTP to the inbox): their kinds, and
//! the handler a flow of intake [`Intake::Pushed`](crate::registry::Intake)
//! gives for its kind. The inbox crate receives and stores the messages; the
//! flows handle them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bridge_store::{Fence, Fenced, Store};
use serde_json::Value;

use crate::lease::Holding;
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
    /// This replica may no longer hold its claim on the message (it was
    /// suspended or cut off from the database past the claim's expiry):
    /// another replica may be processing it, so this one stops and leaves
    /// the message alone.
    #[error("claim lost: {0}")]
    ClaimLost(String),
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

/// The claim under which this replica processes one message: the fence of
/// the message's delivery records, and whether the claim can still be
/// counted on ([`MessageClaim::holding`]). Once it cannot (a renewal said another replica
/// took it, or none succeeded in time), the handler writes nothing more to a
/// partner for the message: another replica may be processing it.
#[derive(Clone, Debug)]
pub struct MessageClaim {
    fence: Option<Fence>,
    holding: Holding,
}

impl MessageClaim {
    /// A claim with `fence`, surely held until `held_until` (this process's
    /// clock), unless renewed.
    pub fn new(fence: Fence, held_until: Instant) -> Self {
        Self {
            fence: Some(fence),
            holding: Holding::until(held_until),
        }
    }

    /// No claim: the message is handled outside the inbox's claims (a test
    /// handing it over directly); nothing is fenced.
    pub fn unclaimed() -> Self {
        Self {
            fence: None,
            holding: Holding::default(),
        }
    }

    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Whether the claim can still be counted on.
    pub fn holding(&self) -> &Holding {
        &self.holding
    }

    /// [`HandlerError::ClaimLost`] once [`Holding::is_lost`]: asked before
    /// each partner write.
    pub fn check(&self) -> Result<(), HandlerError> {
        if self.holding.is_lost() {
            let claim = self
                .fence
                .as_ref()
                .map_or_else(|| "the claim".to_string(), ToString::to_string);
            return Err(HandlerError::ClaimLost(format!(
                "{claim} can no longer be counted on: the message is left to the replica that holds it"
            )));
        }
        Ok(())
    }

    /// `store` with the message's delivery records fenced by the claim:
    /// refused once another replica claimed the message.
    pub fn fenced(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        match &self.fence {
            Some(fence) => Arc::new(Fenced::new(store, fence.clone())),
            None => store,
        }
    }
}

/// Processes one accepted message. Implemented by the flows of design A.
#[async_trait]
pub trait InboxHandler: Send + Sync {
    /// Handle the message under `claim`: stop with
    /// [`HandlerError::ClaimLost`] when [`MessageClaim::check`] says so
    /// before writing to a partner, and write delivery records through
    /// [`MessageClaim::fenced`].
    async fn handle(
        &self,
        kind: InboxKind,
        receipt_id: &str,
        body: &Value,
        today: &str,
        claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fence() -> Fence {
        Fence::Claim {
            message_id: "m".into(),
            token: 1,
        }
    }

    /// A process resumed after a pause longer than its claim sees the claim
    /// lapsed on its own clock, before any renewal could say so.
    #[test]
    fn a_claim_past_the_time_it_was_surely_held_is_lost() {
        let claim = MessageClaim::new(fence(), Instant::now() + Duration::from_secs(60));
        assert!(!claim.holding().is_lost());
        assert!(claim.check().is_ok());
        let lapsed = MessageClaim::new(fence(), Instant::now());
        let holding = lapsed.holding();
        assert!(holding.is_lost());
        assert!(matches!(lapsed.check(), Err(HandlerError::ClaimLost(_))));
        // A renewal moves the time on (nobody claimed the message in
        // between); a late answer never moves it back.
        holding.renewed(Instant::now() + Duration::from_secs(60));
        holding.renewed(Instant::now());
        assert!(!holding.is_lost());
        // Taken over: lost whatever the time.
        holding.declare_lost();
        assert!(holding.is_lost() && holding.declared_lost());
        assert!(lapsed.check().is_err());
        assert!(!MessageClaim::unclaimed().holding().is_lost());
    }
}

//! Routes each inbox message to the flow registered for its kind.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{HandlerError, InboxHandler, InboxKind, MessageClaim};
use bridge_flows::app::App;
use bridge_flows::registry::{self, Intake};
use bridge_flows::RunReport;

#[derive(Default, Clone)]
pub struct Dispatcher {
    handlers: HashMap<InboxKind, Arc<dyn InboxHandler>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every flow the registry says handles a pushed message kind, with the
    /// handler it gives for this App.
    pub fn for_app(app: &App) -> anyhow::Result<Self> {
        let mut dispatcher = Self::new();
        for spec in registry::all() {
            if let Intake::Pushed(kind, handler) = spec.intake {
                dispatcher = dispatcher.with(kind, handler(app)?);
            }
        }
        Ok(dispatcher)
    }

    pub fn with(mut self, kind: InboxKind, handler: Arc<dyn InboxHandler>) -> Self {
        self.handlers.insert(kind, handler);
        self
    }

    /// Registered kinds, in a stable order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = self.handlers.keys().map(|k| k.request_type()).collect();
        kinds.sort_unstable();
        kinds
    }
}

#[async_trait]
impl InboxHandler for Dispatcher {
    async fn handle(
        &self,
        kind: InboxKind,
        receipt_id: &str,
        body: &Value,
        today: &str,
        claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError> {
        match self.handlers.get(&kind) {
            Some(handler) => handler.handle(kind, receipt_id, body, today, claim).await,
            None => Err(HandlerError::Permanent(format!(
                "no handler for {}",
                kind.request_type()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str);

    #[async_trait]
    impl InboxHandler for Fixed {
        async fn handle(
            &self,
            _kind: InboxKind,
            receipt_id: &str,
            _body: &Value,
            _today: &str,
            _claim: &MessageClaim,
        ) -> Result<RunReport, HandlerError> {
            Ok(RunReport {
                flow: self.0.into(),
                run_id: receipt_id.into(),
                ..RunReport::default()
            })
        }
    }

    #[tokio::test]
    async fn routes_by_kind_and_refuses_unknown() {
        let d = Dispatcher::new().with(InboxKind::PrimeroOutgoingReferral, Arc::new(Fixed("a")));
        let r = d
            .handle(
                InboxKind::PrimeroOutgoingReferral,
                "r1",
                &Value::Null,
                "2025-06-01",
                &MessageClaim::unclaimed(),
            )
            .await
            .unwrap();
        assert_eq!((r.flow.as_str(), r.run_id.as_str()), ("a", "r1"));
        assert_eq!(
            d.handle(
                InboxKind::PrimeroIncomingReferralDecision,
                "r2",
                &Value::Null,
                "2025-06-01",
                &MessageClaim::unclaimed()
            )
            .await,
            Err(HandlerError::Permanent(
                "no handler for PrimeroIncomingReferralDecision".into()
            ))
        );
    }
}

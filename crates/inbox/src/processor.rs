//! Hands stored inbox messages to their flow, and deletes each one once it
//! is delivered. A message whose handler says "try again later" stays (its
//! attempt is counted) until it has failed `max_attempts` times; then, or at
//! once when the handler says it will never succeed, it moves to the dead
//! letter: still sealed, no longer pending, until an operator replays it. A
//! message that cannot be opened stays too, since deleting it would lose a
//! referral over a key mistake.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use super::{HandlerError, InboxHandler, InboxKind};
use bridge_flows::lease::Replica;
use bridge_flows::RunReport;
use bridge_store::{ClaimedMessage, InboxMessage, Sealer, Store, StoreError};

/// Longest failure reason kept with a message.
const REASON_MAX_CHARS: usize = 300;
/// Messages claimed at a time: small, so replicas share a burst.
const CLAIM_BATCH: i64 = 4;
/// Longest wait between attempts of a kept message.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

pub struct InboxProcessor {
    pub store: Arc<dyn Store>,
    pub sealer: Sealer,
    pub handler: Arc<dyn InboxHandler>,
    /// Failed attempts before a message moves to the dead letter.
    pub max_attempts: u32,
    /// Who claims messages, and for how long a claim outlives its holder.
    pub replica: Replica,
    /// Delay before the first retry of a kept message; doubles per attempt.
    pub retry_delay: Duration,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "disposition", rename_all = "kebab-case")]
pub enum Disposition {
    /// Handled; the message was deleted.
    Done { report: RunReport },
    /// Failed for good or too often: set aside (sealed) in the dead letter.
    DeadLettered { reason: String },
    /// Kept for a later attempt.
    Kept { reason: String },
    /// Kept: the sealed body could not be opened (wrong key or damage).
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageOutcome {
    pub receipt_id: String,
    pub kind: String,
    /// Failed attempts before this one.
    pub previous_attempts: i64,
    #[serde(flatten)]
    pub disposition: Disposition,
}

/// One pass over the pending messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InboxSummary {
    pub messages: Vec<MessageOutcome>,
}

impl InboxSummary {
    pub fn done(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Done { .. }))
    }
    pub fn dead_lettered(&self) -> usize {
        self.count(|d| matches!(d, Disposition::DeadLettered { .. }))
    }
    pub fn kept(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Kept { .. } | Disposition::Unreadable))
    }
    fn count(&self, f: impl Fn(&Disposition) -> bool) -> usize {
        self.messages.iter().filter(|m| f(&m.disposition)).count()
    }
}

impl InboxProcessor {
    pub fn new(store: Arc<dyn Store>, sealer: Sealer, handler: Arc<dyn InboxHandler>) -> Self {
        Self {
            store,
            sealer,
            handler,
            max_attempts: bridge_flows::ledger::DeliveryPolicy::default().max_attempts,
            replica: Replica::default(),
            retry_delay: Duration::ZERO,
        }
    }

    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Claims as `replica` (default: a fresh id, a 15 s claim).
    pub fn with_replica(mut self, replica: Replica) -> Self {
        self.replica = replica;
        self
    }

    /// Kept messages wait `delay`, doubling per failed attempt, before any
    /// replica claims them again (default: none).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Every message that can be claimed now, oldest first, each once: a
    /// message kept in this pass is not taken again in it.
    pub async fn process_pending(&self, today: &str) -> Result<InboxSummary, StoreError> {
        self.process_pending_while(today, || true).await
    }

    /// [`InboxProcessor::process_pending`], stopping between messages once
    /// `go_on` says so (shutdown).
    pub async fn process_pending_while(
        &self,
        today: &str,
        go_on: impl Fn() -> bool,
    ) -> Result<InboxSummary, StoreError> {
        let mut summary = InboxSummary::default();
        let mut seen = HashSet::new();
        loop {
            let (fresh, again): (Vec<_>, Vec<_>) = self
                .claim()
                .await?
                .into_iter()
                .partition(|c| !seen.contains(&c.message.id));
            // Kept earlier in this pass and due again at once (no backoff):
            // give it back for the next pass rather than loop on it.
            for claimed in &again {
                self.store
                    .inbox_renew(&claimed.fence, Duration::ZERO)
                    .await?;
            }
            if fresh.is_empty() {
                return Ok(summary);
            }
            for claimed in fresh {
                if !go_on() {
                    self.store
                        .inbox_renew(&claimed.fence, Duration::ZERO)
                        .await?;
                    continue;
                }
                seen.insert(claimed.message.id.clone());
                summary
                    .messages
                    .push(self.process_claimed(&claimed, today).await?);
            }
            if !go_on() {
                return Ok(summary);
            }
        }
    }

    /// Claim the next few messages for this replica.
    pub async fn claim(&self) -> Result<Vec<ClaimedMessage>, StoreError> {
        self.store
            .inbox_claim(&self.replica.id, self.replica.lease_ttl, CLAIM_BATCH)
            .await
    }

    /// Process a claimed message, renewing the claim while it runs so no
    /// other replica takes it over.
    pub async fn process_claimed(
        &self,
        claimed: &ClaimedMessage,
        today: &str,
    ) -> Result<MessageOutcome, StoreError> {
        let renewing = tokio::spawn(renew(
            self.store.clone(),
            claimed.clone(),
            self.replica.clone(),
        ));
        let outcome = self.process_message(&claimed.message, today).await;
        renewing.abort();
        outcome
    }

    /// Open one message, hand it to its flow, and keep or delete it.
    pub async fn process_message(
        &self,
        message: &InboxMessage,
        today: &str,
    ) -> Result<MessageOutcome, StoreError> {
        let span = tracing::info_span!("inbox", receipt = %message.id, kind = %message.kind);
        let disposition = self.dispose(message, today).instrument(span).await?;
        Ok(MessageOutcome {
            receipt_id: message.id.clone(),
            kind: message.kind.clone(),
            previous_attempts: message.attempts,
            disposition,
        })
    }

    /// The backoff before attempt `failed_attempts + 1`.
    fn backoff(&self, failed_attempts: i64) -> Duration {
        backoff(self.retry_delay, failed_attempts)
    }

    async fn dispose(
        &self,
        message: &InboxMessage,
        today: &str,
    ) -> Result<Disposition, StoreError> {
        let id = message.id.as_str();
        let Ok(plain) = self.sealer.open(id, &message.sealed_body) else {
            tracing::error!(
                receipt = %id,
                "inbox message {id}: no seal key opens it (the key that sealed it is not in inbox.seal_key or inbox.previous_seal_keys, or the data is damaged); kept, not processed"
            );
            self.store
                .inbox_failed(id, "seal-open-failed", self.backoff(message.attempts + 1))
                .await?;
            return Ok(Disposition::Unreadable);
        };
        // Accepted messages were checked on the way in; these only fail if
        // the stored row was not written by this inbox.
        let parsed = (
            InboxKind::from_request_type(&message.kind),
            serde_json::from_slice::<Value>(&plain),
        );
        drop(plain);
        let (kind, body) = match parsed {
            (Some(kind), Ok(body)) => (kind, body),
            (None, _) => {
                return self
                    .dead_letter(message, "inbox", "unknown-kind", "unknown message kind")
                    .await
            }
            (Some(kind), Err(_)) => {
                return self
                    .dead_letter(message, kind.flow(), "bad-input", "stored body is not JSON")
                    .await
            }
        };
        match self.handler.handle(kind, id, &body, today).await {
            Ok(report) => {
                self.store.inbox_delete(id).await?;
                tracing::info!(records = report.records.len(), "inbox message processed");
                Ok(Disposition::Done { report })
            }
            Err(HandlerError::Permanent(reason)) => {
                self.dead_letter(message, kind.flow(), "permanent", &reason)
                    .await
            }
            Err(HandlerError::Retryable(reason)) => {
                let reason = truncate(&reason);
                let attempt = message.attempts + 1;
                self.store
                    .inbox_failed(id, &reason, self.backoff(attempt))
                    .await?;
                if attempt >= i64::from(self.max_attempts) {
                    return self
                        .dead_letter(message, kind.flow(), "retries-exhausted", &reason)
                        .await;
                }
                tracing::warn!(%reason, attempt, "inbox message kept for retry");
                Ok(Disposition::Kept { reason })
            }
        }
    }

    /// Set the message aside, sealed, until an operator replays it.
    async fn dead_letter(
        &self,
        message: &InboxMessage,
        flow: &str,
        code: &str,
        reason: &str,
    ) -> Result<Disposition, StoreError> {
        let reason = truncate(reason);
        let id = message.id.as_str();
        self.store.inbox_set_dead(id, &reason).await?;
        self.store
            .dead_letter_put(flow, id, code, &reason, message.attempts + 1, None)
            .await?;
        tracing::warn!(%reason, code, "inbox message moved to the dead letter");
        Ok(Disposition::DeadLettered { reason })
    }
}

/// Delay before attempt `failed_attempts + 1` of a kept message: `base`,
/// doubling per failed attempt, at most [`MAX_RETRY_DELAY`].
pub fn backoff(base: Duration, failed_attempts: i64) -> Duration {
    let exp = failed_attempts.clamp(1, 20) as u32 - 1;
    base.saturating_mul(1u32 << exp.min(16))
        .min(MAX_RETRY_DELAY)
}

/// Keep a claim alive while its message is processed: renewed three times
/// per ttl. A claim found taken over is logged; the fenced writes of the
/// message's flow then refuse this replica's commits.
async fn renew(store: Arc<dyn Store>, claimed: ClaimedMessage, replica: Replica) {
    loop {
        tokio::time::sleep(replica.renew_every()).await;
        match store.inbox_renew(&claimed.fence, replica.lease_ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(receipt = %claimed.message.id, "the claim on this inbox message was taken over by another replica");
                return;
            }
            Err(e) => {
                tracing::warn!(receipt = %claimed.message.id, error = %e, "cannot renew the claim on this inbox message; trying again")
            }
        }
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(REASON_MAX_CHARS) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_string(),
    }
}

#[async_trait::async_trait]
impl bridge_flows::app::PendingMessages for InboxProcessor {
    async fn process_pending(&self, today: &str) -> anyhow::Result<Vec<RunReport>> {
        let summary = InboxProcessor::process_pending(self, today).await?;
        Ok(summary
            .messages
            .into_iter()
            .filter_map(|m| match m.disposition {
                Disposition::Done { report } => Some(report),
                _ => None,
            })
            .collect())
    }
}

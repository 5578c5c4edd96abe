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

use super::{HandlerError, InboxHandler, InboxKind, MessageClaim};
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
    /// Left to whichever replica claims it: this replica's claim could not
    /// be counted on while it was processed (another replica may be
    /// processing it now).
    ClaimLost { reason: String },
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
            // Claims are surely held for their ttl from before they were asked.
            let asked = std::time::Instant::now();
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
            let claims: Vec<MessageClaim> = fresh
                .iter()
                .map(|c| MessageClaim::new(c.fence.clone(), self.replica.held_until(asked)))
                .collect();
            // The whole batch stays claimed while its messages wait their
            // turn: a claim left to expire behind a slow message would let
            // another replica process that message at the same time.
            let _keeper = AbortOnDrop(tokio::spawn(keep_claims(
                self.store.clone(),
                claims.clone(),
                self.replica.clone(),
            )));
            for (claimed, claim) in fresh.into_iter().zip(claims) {
                if !go_on() {
                    self.store
                        .inbox_renew(&claimed.fence, Duration::ZERO)
                        .await?;
                    continue;
                }
                // Still ours? A process stalled past the claim's expiry
                // (suspended, cut off from the database) may have lost it.
                if !self.confirm(&claim).await? {
                    tracing::warn!(receipt = %claimed.message.id, "the claim on this inbox message was taken over by another replica before it was processed: left to it");
                    continue;
                }
                seen.insert(claimed.message.id.clone());
                summary.messages.push(
                    self.process_message(&claimed.message, today, &claim)
                        .await?,
                );
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

    /// Renew `claim` now: whether it is still this replica's.
    async fn confirm(&self, claim: &MessageClaim) -> Result<bool, StoreError> {
        renew(self.store.as_ref(), claim, &self.replica).await
    }

    /// Open one message, hand it to its flow under `claim`, and keep or
    /// delete it.
    pub async fn process_message(
        &self,
        message: &InboxMessage,
        today: &str,
        claim: &MessageClaim,
    ) -> Result<MessageOutcome, StoreError> {
        let span = tracing::info_span!("inbox", receipt = %message.id, kind = %message.kind);
        let disposition = self.dispose(message, today, claim).instrument(span).await?;
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
        claim: &MessageClaim,
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
        let handled = self.handler.handle(kind, id, &body, today, claim).await;
        let ours = self.still_ours(claim).await?;
        match handled {
            // Stopped part way. If nobody claimed it meanwhile (the claim
            // only lapsed), it is given back to be claimed again at once.
            Err(HandlerError::ClaimLost(reason)) => {
                if let (true, Some(fence)) = (ours, claim.fence()) {
                    self.store.inbox_renew(fence, Duration::ZERO).await?;
                }
                Ok(left_to_its_claimant(reason))
            }
            // Another replica holds the message now: what becomes of it is
            // its decision (deleting or keeping it here could undo its work).
            _ if !ours => Ok(left_to_its_claimant(
                "another replica claimed the message while it was processed".into(),
            )),
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

    /// Whether the message may still be deleted, kept or set aside by this
    /// replica: no other replica claimed it meanwhile (the claim's token
    /// did not move), confirmed now.
    async fn still_ours(&self, claim: &MessageClaim) -> Result<bool, StoreError> {
        Ok(!claim.holding().declared_lost() && self.confirm(claim).await?)
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

/// What becomes of a message whose claim this replica lost.
fn left_to_its_claimant(reason: String) -> Disposition {
    tracing::warn!(%reason, "inbox message left to the replica that claims it");
    Disposition::ClaimLost { reason }
}

/// Renew `claim` for `replica`'s ttl: whether it is still this replica's
/// (recorded in its [`MessageClaim::holding`] either way). A message handled
/// outside claims is always its own.
async fn renew(
    store: &dyn Store,
    claim: &MessageClaim,
    replica: &Replica,
) -> Result<bool, StoreError> {
    let Some(fence) = claim.fence() else {
        return Ok(true);
    };
    let asked = std::time::Instant::now();
    let ours = store.inbox_renew(fence, replica.lease_ttl).await?;
    if ours {
        claim.holding().renewed(replica.held_until(asked));
    } else {
        claim.holding().declare_lost();
    }
    Ok(ours)
}

/// Keep the claims of a batch alive until the batch is processed: renewed
/// three times per ttl. A claim that cannot be renewed any more is declared
/// lost and dropped from the list: its message was processed (deleted, or
/// kept with its claim cleared), or another replica took it over, which the
/// message's handler then sees before its next partner write. A claim that
/// no renewal confirmed in time counts as lost meanwhile
/// ([`MessageClaim::is_lost`]).
async fn keep_claims(store: Arc<dyn Store>, mut claims: Vec<MessageClaim>, replica: Replica) {
    while !claims.is_empty() {
        tokio::time::sleep(replica.renew_every()).await;
        let mut kept = Vec::with_capacity(claims.len());
        for claim in claims {
            match renew(store.as_ref(), &claim, &replica).await {
                Ok(true) => kept.push(claim),
                Ok(false) => {}
                Err(e) => {
                    if let Some(fence) = claim.fence() {
                        tracing::warn!(%fence, error = %e, "cannot renew an inbox claim; trying again");
                    }
                    kept.push(claim);
                }
            }
        }
        claims = kept;
    }
}

/// Aborts its task when dropped, including on an early `?` return.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use bridge_store::SqliteStore;

    /// A store whose inbox holds one sealed message per id, and its sealer.
    async fn inbox_with(ids: &[String]) -> (Arc<dyn Store>, Sealer) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
        for id in ids {
            let sealed = sealer.seal(id, b"{}").unwrap();
            store
                .inbox_put(id, "PrimeroOutgoingReferral", "k", &sealed)
                .await
                .unwrap();
        }
        (store, sealer)
    }

    /// Takes `delay` per message, noting each receipt it handles.
    struct Slow {
        delay: Duration,
        handled: Mutex<Vec<String>>,
        /// Told when the first message is being handled (its batch claimed).
        started: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl InboxHandler for Slow {
        async fn handle(
            &self,
            _kind: InboxKind,
            receipt_id: &str,
            _body: &Value,
            _today: &str,
            _claim: &MessageClaim,
        ) -> Result<RunReport, HandlerError> {
            self.started.notify_one();
            tokio::time::sleep(self.delay).await;
            self.handled.lock().unwrap().push(receipt_id.to_string());
            Ok(RunReport::default())
        }
    }

    /// A batch of four takes longer than a claim's ttl to process: its
    /// last messages stay claimed meanwhile, so another replica asking for
    /// work all along gets none of them (it would process them twice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_batch_stays_claimed_until_each_message_is_processed() {
        let ids: Vec<String> = (0..CLAIM_BATCH).map(|i| format!("m{i}")).collect();
        let (store, sealer) = inbox_with(&ids).await;
        let ttl = Duration::from_millis(600);
        let handler = Arc::new(Slow {
            delay: Duration::from_millis(400),
            handled: Mutex::new(Vec::new()),
            started: tokio::sync::Notify::new(),
        });
        let processor = InboxProcessor::new(store.clone(), sealer, handler.clone())
            .with_replica(Replica::new(Some("a"), ttl));
        let stop = tokio_util::sync::CancellationToken::new();
        let other = tokio::spawn({
            let (store, stop, handler) = (store.clone(), stop.clone(), handler.clone());
            async move {
                // From once replica a has claimed its batch: started
                // earlier, b could claim the messages first (a race the
                // test is not about).
                handler.started.notified().await;
                let mut got = Vec::new();
                while !stop.is_cancelled() {
                    for c in store.inbox_claim("b", ttl, CLAIM_BATCH).await.unwrap() {
                        got.push(c.message.id);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                got
            }
        });
        let summary = processor.process_pending("2025-06-01").await.unwrap();
        stop.cancel();
        let taken = other.await.unwrap();
        assert_eq!(summary.done(), 4, "{summary:?}");
        assert_eq!(handler.handled.lock().unwrap().len(), 4);
        assert!(taken.is_empty(), "replica b claimed {taken:?}");
        assert!(store.inbox_pending().await.unwrap().is_empty());
    }

    /// Hands its claim out, waits to be let go (the pause), then behaves
    /// as a flow does before a partner write and a delivery record.
    struct Paused {
        store: Arc<dyn Store>,
        claim: Mutex<Option<MessageClaim>>,
        started: tokio::sync::Notify,
        resume: tokio::sync::Notify,
        /// What the handler did after the pause.
        did: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl InboxHandler for Paused {
        async fn handle(
            &self,
            _kind: InboxKind,
            receipt_id: &str,
            _body: &Value,
            _today: &str,
            claim: &MessageClaim,
        ) -> Result<RunReport, HandlerError> {
            *self.claim.lock().unwrap() = Some(claim.clone());
            self.started.notify_one();
            self.resume.notified().await;
            let store = claim.fenced(self.store.clone());
            let recorded = store
                .record_delivery("dtp-1.1", receipt_id, "delivered", None)
                .await;
            self.did.lock().unwrap().push(match recorded {
                Err(StoreError::Fenced(_)) => "record refused".into(),
                other => format!("record {other:?}"),
            });
            if let Err(e) = claim.check() {
                self.did.lock().unwrap().push("stopped".into());
                return Err(e);
            }
            self.did.lock().unwrap().push("wrote to the partner".into());
            Ok(RunReport::default())
        }
    }

    /// Replica a is suspended in the middle of a message past its claim
    /// and replica b claims the message meanwhile. When a resumes it writes
    /// nothing more to a partner for it, its delivery record is refused, and
    /// it leaves the message to b (neither deleted nor kept by a).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_taken_over_mid_message_stops_its_old_holder() {
        let (store, sealer) = inbox_with(&["m0".to_string()]).await;
        let ttl = Duration::from_millis(600);
        let handler = Arc::new(Paused {
            store: store.clone(),
            claim: Mutex::default(),
            started: tokio::sync::Notify::new(),
            resume: tokio::sync::Notify::new(),
            did: Mutex::default(),
        });
        let processor = InboxProcessor::new(store.clone(), sealer, handler.clone())
            .with_replica(Replica::new(Some("a"), ttl));
        let a = tokio::spawn(async move { processor.process_pending("2025-06-01").await });
        handler.started.notified().await;
        let claim = handler.claim.lock().unwrap().clone().unwrap();
        let fence = claim.fence().cloned().unwrap();
        // The pause: a's claim runs out and b claims the message (a's
        // keeper may renew in between; then expire it again).
        let taken = loop {
            store.inbox_renew(&fence, Duration::ZERO).await.unwrap();
            let got = store.inbox_claim("b", ttl, CLAIM_BATCH).await.unwrap();
            if !got.is_empty() {
                break got;
            }
        };
        assert_eq!(taken[0].message.id, "m0");
        // a's next renewal finds the claim taken (its keeper keeps running
        // here, unlike in a real suspension).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !claim.holding().is_lost() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handler.resume.notify_one();
        let summary = a.await.unwrap().unwrap();
        assert_eq!(
            *handler.did.lock().unwrap(),
            vec!["record refused".to_string(), "stopped".to_string()]
        );
        assert!(
            matches!(
                summary.messages[0].disposition,
                Disposition::ClaimLost { .. }
            ),
            "{summary:?}"
        );
        // Still b's: neither deleted nor given back by a.
        assert!(store.inbox_renew(&taken[0].fence, ttl).await.unwrap());
    }
}

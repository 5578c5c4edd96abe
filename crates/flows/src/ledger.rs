//! Attempts across runs and the dead letter: what a flow asks before it
//! works on a record, and tells after.
//!
//! A record that fails is retried by the next runs; after
//! [`DeliveryPolicy::max_attempts`] consecutive failures it moves to the dead
//! letter with its reason, and later runs leave it alone (for a cursor flow
//! the cursor may then move past it) until an operator replays it.
//!
//! The flow's attempt counts and dead-letter entries are read once per run,
//! so a run of records that succeed costs no state writes here.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::report::RecordOutcome;
use bridge_store::{Store, StoreError};

/// Reason code of a write that may or may not have been applied (the answer
/// was lost or unreadable) and cannot be checked: sending it again could
/// duplicate it, so it goes to the dead letter at once for an operator to
/// look in the target system and replay only if it is not there.
pub const OUTCOME_UNKNOWN: &str = "outcome-unknown";

/// Reason code of a write the target applied only in part (a case created
/// without the fields it is found by next time): sending it again would
/// duplicate it, so it too goes to the dead letter at once.
pub const WRITE_INCOMPLETE: &str = "write-incomplete";

/// Codes whose record is dead-lettered on the first failure.
const NOT_RETRIED: [&str; 2] = [OUTCOME_UNKNOWN, WRITE_INCOMPLETE];

/// How often a failing record is tried, and for how many runs a held one
/// waits, before it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    /// Consecutive runs a record may be held (it waits for a person to fix
    /// something in a partner system) before it moves to the dead letter,
    /// where it is listed with what resolves it and stops being counted
    /// again every run.
    pub max_held_runs: u32,
}

/// `[delivery] max_held_runs` by default: about a day of a 15-minute schedule.
pub const DEFAULT_MAX_HELD_RUNS: u32 = 96;

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_held_runs: DEFAULT_MAX_HELD_RUNS,
        }
    }
}

/// What a person does about a record held with this reason code.
pub fn resolution(code: &str) -> &'static str {
    match code {
        "ambiguous-match" => {
            "several Primero cases or referrals match this record's ids: merge or correct the duplicates in Primero, then the next run (or `bridge dead-letter replay`) delivers it"
        }
        "filter-not-applied" => {
            "Primero ignored the lookup's filter (the API user's role cannot filter on the field): fix the role (docs/operator/primero-role.md), run `bridge doctor`, then replay"
        }
        "unmapped" => {
            "a code has no entry in the country's mapping table the reason names: add it to that table in the mapping folder (hot reload takes it; `bridge mappings check` first), then replay"
        }
        OUTCOME_UNKNOWN => {
            "the partner may hold this referral already (it was sent, and the answer was lost or the run stopped before recording it): look for it in proGres or DTP by the service id; replay it only if it is not there"
        }
        "decision-conflict" => {
            "Primero's referral is in a state that does not take this decision (already decided or closed): check the referral in Primero; replay only if the decision must still be recorded"
        }
        _ => "look at the record in the partner system named by the reason, correct it, then replay it",
    }
}

/// A replay run: only these records, read from this point, and the
/// flow's cursor is left where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Cursor flows: where to read from (the earliest hint of the entries).
    pub since: Option<DateTime<Utc>>,
    pub only: HashSet<String>,
}

/// One run's view of the attempts and the dead letter of its flow.
pub struct Ledger<'a> {
    store: &'a dyn Store,
    flow: String,
    policy: DeliveryPolicy,
    replay: Option<Replay>,
    /// Failed attempts so far, by source id (records that failed before or in this run).
    attempts: Mutex<HashMap<String, i64>>,
    /// Active dead-letter entries: source id → entry id.
    parked: HashMap<String, i64>,
}

impl<'a> Ledger<'a> {
    pub async fn load(
        store: &'a dyn Store,
        flow: &str,
        policy: DeliveryPolicy,
        replay: Option<Replay>,
    ) -> Result<Self, StoreError> {
        let parked = store
            .dead_letters(Some(flow))
            .await?
            .into_iter()
            .map(|d| (d.source_id, d.id))
            .collect();
        let attempts = store.attempts_all(flow).await?.into_iter().collect();
        Ok(Self {
            store,
            flow: flow.to_string(),
            policy,
            replay,
            attempts: Mutex::new(attempts),
            parked,
        })
    }

    pub fn flow(&self) -> &str {
        &self.flow
    }

    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }

    /// Whether this run works on the record at all (a replay only touches
    /// the records it replays).
    pub fn selects(&self, source_id: &str) -> bool {
        self.replay
            .as_ref()
            .is_none_or(|r| r.only.contains(source_id))
    }

    /// `Some` when the record waits in the dead letter: it is not attempted.
    pub fn parked(&self, source_id: &str) -> Option<RecordOutcome> {
        self.parked
            .get(source_id)
            .map(|&dead_letter_id| RecordOutcome::Parked { dead_letter_id })
    }

    /// Failed attempts so far (including this run's).
    pub fn attempt(&self, source_id: &str) -> i64 {
        self.lock().get(source_id).copied().unwrap_or(0)
    }

    /// A held record: counted like an attempt; past `max_held_runs` it
    /// moves to the dead letter with what resolves it.
    async fn settle_held(
        &self,
        source_id: &str,
        reason: &str,
        cursor_hint: Option<&str>,
    ) -> Result<Option<RecordOutcome>, StoreError> {
        let code = reason
            .split([':', ' '])
            .next()
            .unwrap_or("held")
            .to_string();
        let resolve = resolution(&code);
        let n = self
            .store
            .attempt_failed(&self.flow, source_id, &code)
            .await?;
        self.lock().insert(source_id.to_string(), n);
        if n < i64::from(self.policy.max_held_runs.max(1)) {
            tracing::warn!(
                flow = %self.flow,
                record = %source_id,
                code = %code,
                held_runs = n,
                max_held_runs = self.policy.max_held_runs,
                resolve,
                "record held"
            );
            return Ok(None);
        }
        let reason = format!("{reason} (held {n} runs): {resolve}");
        self.store
            .dead_letter_put(&self.flow, source_id, &code, &reason, n, cursor_hint)
            .await?;
        tracing::warn!(
            flow = %self.flow,
            record = %source_id,
            code = %code,
            held_runs = n,
            resolve,
            "held record moved to the dead letter"
        );
        Ok(Some(RecordOutcome::DeadLettered { code, reason }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // A panic elsewhere cannot leave the map half-updated.
        self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count the attempt. A failure past the limit becomes
    /// [`RecordOutcome::DeadLettered`]; a success forgets earlier failures.
    /// `cursor_hint`: where a cursor flow must read from to see the record again.
    pub async fn settle(
        &self,
        source_id: &str,
        outcome: RecordOutcome,
        cursor_hint: Option<&str>,
    ) -> RecordOutcome {
        match self.try_settle(source_id, &outcome, cursor_hint).await {
            Ok(Some(settled)) => settled,
            Ok(None) => outcome,
            Err(e) => {
                // The record's own outcome stands; it is tried again next run.
                tracing::error!(error = %e, "state database: attempt not recorded");
                outcome
            }
        }
    }

    async fn try_settle(
        &self,
        source_id: &str,
        outcome: &RecordOutcome,
        cursor_hint: Option<&str>,
    ) -> Result<Option<RecordOutcome>, StoreError> {
        let RecordOutcome::Failed { code, reason } = outcome else {
            if let RecordOutcome::Held { reason, .. } = outcome {
                // Waits for a person in the partner system: not a failure,
                // but not forever either.
                return self.settle_held(source_id, reason, cursor_hint).await;
            }
            if self.lock().remove(source_id).is_some() {
                self.store.clear_attempts(&self.flow, source_id).await?;
            }
            return Ok(None);
        };
        let n = self
            .store
            .attempt_failed(&self.flow, source_id, code)
            .await?;
        self.lock().insert(source_id.to_string(), n);
        if n < i64::from(self.policy.max_attempts) && !NOT_RETRIED.contains(&code.as_str()) {
            tracing::info!(code = %code, attempt = n, "record failed; retried next run");
            return Ok(None);
        }
        self.store
            .dead_letter_put(&self.flow, source_id, code, reason, n, cursor_hint)
            .await?;
        tracing::warn!(flow = %self.flow, record = %source_id, code = %code, attempt = n, "record moved to the dead letter");
        Ok(Some(RecordOutcome::DeadLettered {
            code: code.clone(),
            reason: reason.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::failed;
    use bridge_store::SqliteStore;

    #[tokio::test]
    async fn fails_until_the_limit_then_dead_letters_then_stays_parked() {
        let store = SqliteStore::in_memory().await.unwrap();
        let policy = DeliveryPolicy {
            max_attempts: 3,
            ..DeliveryPolicy::default()
        };
        for run in 1..=3 {
            let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
            assert!(ledger.parked("r1").is_none());
            let out = ledger
                .settle(
                    "r1",
                    failed("partner-unavailable", "503"),
                    Some("2025-01-01T00:00:00.000Z"),
                )
                .await;
            assert_eq!(ledger.attempt("r1"), run);
            if run < 3 {
                assert_eq!(out.label(), "failed");
            } else {
                assert_eq!(out.label(), "dead-lettered");
            }
        }
        let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
        let Some(RecordOutcome::Parked { dead_letter_id }) = ledger.parked("r1") else {
            panic!("expected parked");
        };
        let entry = store
            .dead_letter_get(dead_letter_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.reason_code, "partner-unavailable");
        assert_eq!(entry.attempts, 3);
        assert_eq!(
            entry.cursor_hint.as_deref(),
            Some("2025-01-01T00:00:00.000Z")
        );
        // Another flow is not affected.
        let other = Ledger::load(&store, "g", policy, None).await.unwrap();
        assert!(other.parked("r1").is_none());
        // Replay releases it and forgets the attempts.
        assert!(store.dead_letter_release(dead_letter_id).await.unwrap());
        assert!(!store.dead_letter_release(dead_letter_id).await.unwrap());
        let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
        assert!(ledger.parked("r1").is_none());
        assert_eq!(ledger.attempt("r1"), 0);
    }

    #[tokio::test]
    async fn a_success_forgets_earlier_failures() {
        let store = SqliteStore::in_memory().await.unwrap();
        let policy = DeliveryPolicy {
            max_attempts: 2,
            ..DeliveryPolicy::default()
        };
        let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
        ledger.settle("r1", failed("x", "y"), None).await;
        let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
        assert_eq!(ledger.attempt("r1"), 1);
        let out = ledger
            .settle("r1", RecordOutcome::Sent { target_id: None }, None)
            .await;
        assert_eq!(out.label(), "sent");
        assert_eq!(store.attempts("f", "r1").await.unwrap(), 0);
        // The next failure starts the count again: not dead-lettered.
        let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
        assert_eq!(
            ledger.settle("r1", failed("x", "y"), None).await.label(),
            "failed"
        );
    }

    #[tokio::test]
    async fn a_replay_selects_only_its_records() {
        let store = SqliteStore::in_memory().await.unwrap();
        let replay = Replay {
            since: None,
            only: ["a".to_string()].into_iter().collect(),
        };
        let ledger = Ledger::load(&store, "f", DeliveryPolicy::default(), Some(replay))
            .await
            .unwrap();
        assert!(ledger.selects("a"));
        assert!(!ledger.selects("b"));
    }

    #[tokio::test]
    async fn a_held_record_waits_max_held_runs_then_is_dead_lettered_with_its_resolution() {
        let store = SqliteStore::in_memory().await.unwrap();
        let policy = DeliveryPolicy {
            max_attempts: 5,
            max_held_runs: 3,
        };
        let held = || RecordOutcome::Held {
            reason: "ambiguous-match".into(),
            candidates: vec!["c1".into(), "c2".into()],
        };
        for run in 1..=3 {
            let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
            assert!(ledger.parked("r1").is_none(), "run {run}");
            let out = ledger.settle("r1", held(), None).await;
            if run < 3 {
                assert_eq!(out.label(), "held", "run {run}");
            } else {
                assert_eq!(out.label(), "dead-lettered");
            }
        }
        let ledger = Ledger::load(&store, "f", policy, None).await.unwrap();
        let Some(RecordOutcome::Parked { dead_letter_id }) = ledger.parked("r1") else {
            panic!("expected parked");
        };
        let entry = store
            .dead_letter_get(dead_letter_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.reason_code, "ambiguous-match");
        assert!(
            entry.reason.contains("merge or correct the duplicates"),
            "{}",
            entry.reason
        );
        // Resolved in Primero before the limit: the count starts again.
        let other = Ledger::load(&store, "f", policy, None).await.unwrap();
        other.settle("r2", held(), None).await;
        other
            .settle("r2", RecordOutcome::Sent { target_id: None }, None)
            .await;
        assert_eq!(store.attempts("f", "r2").await.unwrap(), 0);
    }
}

//! PING workflow 2.1: Primero referral → proGres interoperability referral.
//!
//! cases changed since the cursor (paged) → per case `GET referrals` → users
//! (once per run, only if needed) → job `ping-2.1` (which
//! services are new UNHCR referrals; the SHP-2731 record) → async ingestion
//! (SHP-2731) → check status of the transaction. Shared steps and the cursor
//! rules: [`super::outbound_referrals`].
//!
//! Better than the original (spec README, §5.14): the check status decides.
//! A refused transaction is a per-record failure sent again next run; a
//! transaction whose outcome is not known yet is remembered (state store,
//! `submitted` + transaction id) and asked about again next run instead of
//! being sent twice; only a confirmed one is `delivered`.

use futures::future::BoxFuture;

use crate::app::App;
use crate::registry::{Design, FlowRun, FlowSpec, Intake, Partner};
use super::group_commit::GroupCommit;
use super::ledger::OUTCOME_UNKNOWN;
use super::outbound_referrals::{
    left_sending, maybe_applied, partner_failure, Deliver, EmittedReferral, OutboundRun,
    FP_DELIVERED, FP_NOT_SENT, FP_REFUSED, FP_SENDING, FP_SUBMITTED,
};
use super::report::{failed, would_write, RecordOutcome, RunReport};
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::ping::{AsyncIngestionRecord, IngestionStatus, PingClient};
use bridge_partners::primero::PrimeroClient;
use bridge_partners::ConnectorError;
use bridge_runtime::reload::Catalog;
use bridge_store::{Delivery, Store};
use serde::Deserialize;

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "ping-2.1";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "Primero referral → proGres (PING workflow 2.1)",
    design: Design::Ping,
    intake: Intake::Cursor(run),
    partners: &[Partner::Primero, Partner::Ping],
};

fn run<'a>(app: &'a App, run: FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>> {
    Box::pin(async move {
        let ping = app.ping_for(FLOW)?;
        Ok(Ping21 {
            records: run.records,
            primero: &app.primero,
            ping,
            store: run.store,
            catalog: &app.catalog,
            ledger: run.ledger,
            stop: run.stop,
            holding: run.holding,
            concurrency: app.record_concurrency,
            initial_cursor: app.initial_cursors.get(FLOW).copied(),
            dry_run: app.dry_run,
        }
        .run(run.run_id, run.today)
        .await)
    })
}

/// Failure code of a referral proGres refused (check status negative).
pub const REFUSED: &str = "refused";

/// Key of the proGres referral id in a check-status item's `Data`.
const INTEROP_REFERRAL_ID: &str = "progres_interoperabilityreferralid";

/// The clients and versions one run works with.
pub struct Ping21<'a> {
    /// A recorded run's: where the report streams its records.
    pub records: Option<crate::record_stream::RecordStream>,
    pub primero: &'a PrimeroClient,
    pub ping: &'a PingClient,
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    pub ledger: &'a crate::ledger::Ledger<'a>,
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Whether the flow's lease can still be counted on (checked before
    /// each referral is sent).
    pub holding: &'a crate::lease::Holding,
    /// Deliveries handed to the partner at once.
    pub concurrency: usize,
    pub initial_cursor: Option<chrono::DateTime<chrono::Utc>>,
    pub dry_run: bool,
}

/// The PING part of what the job emits.
#[derive(Debug, Clone, Deserialize)]
pub struct PingPayload {
    pub record: AsyncIngestionRecord,
}

/// What check status says about a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionState {
    /// Applied; the proGres interoperability referral id when PING gave it.
    Processed(Option<String>),
    /// proGres refused it (the status word PING used).
    Refused(String),
    /// Not processed yet, or a status this bridge does not know: ask again later.
    Undecided(Option<String>),
}

fn is_one_of(status: &str, words: &[&str]) -> bool {
    let s: String = status
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .collect();
    words.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// Classify the items of a check-status answer (one item per record sent).
/// An unknown status is never taken as success (the original's quirk for
/// decisions) nor as refusal (which would send a duplicate).
pub fn transaction_state(items: &[IngestionStatus]) -> TransactionState {
    const DONE: &[&str] = &[
        "processed",
        "success",
        "succeeded",
        "completed",
        "complete",
        "ok",
    ];
    const REFUSED: &[&str] = &[
        "failed",
        "failure",
        "error",
        "rejected",
        "invalid",
        "cancelled",
        "canceled",
    ];
    if let Some(word) = items
        .iter()
        .filter_map(|i| i.status.as_deref())
        .find(|s| is_one_of(s, REFUSED))
    {
        return TransactionState::Refused(word.to_string());
    }
    let done = !items.is_empty()
        && items
            .iter()
            .all(|i| i.status.as_deref().is_some_and(|s| is_one_of(s, DONE)));
    if done {
        let id = items.iter().find_map(|i| {
            i.data
                .as_ref()
                .and_then(|d| d.get(INTEROP_REFERRAL_ID))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
        return TransactionState::Processed(id);
    }
    TransactionState::Undecided(items.iter().find_map(|i| i.status.clone()))
}

struct PingDelivery<'a> {
    ping: &'a PingClient,
    store: &'a dyn Store,
    shipping_process: String,
    commits: GroupCommit<(String, String, Option<String>)>,
    /// Referrals PING confirmed, written at the end of their page
    /// (`Deliver::flush`): each is `submitted` in the store already, so a
    /// crash before the write only makes the next run ask PING again.
    confirmed: std::sync::Mutex<Vec<(String, String, Option<String>)>>,
    /// An operator's replay: a referral left `sending` by an earlier run
    /// goes again (the operator checked proGres).
    replaying: bool,
}

impl PingDelivery<'_> {
    async fn remember(&self, key: &str, state: &str, target: Option<&str>) -> Result<(), String> {
        // Referrals answered at the same time share one transaction; each
        // still returns once its own state is written.
        let store = self.store;
        let item = (key.to_string(), state.to_string(), target.map(str::to_string));
        self.commits
            .commit(vec![item], |batch| async move {
                store
                    .record_deliveries(FLOW, &batch)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
    }

    /// Ask PING about `txn` and record what it says.
    async fn settle(&self, key: &str, txn: &str) -> Result<RecordOutcome, String> {
        let answer = self.ping.check_status(&self.shipping_process, txn).await;
        self.settled(key, txn, answer).await
    }

    /// Record what check status said about `txn`.
    async fn settled(
        &self,
        key: &str,
        txn: &str,
        answer: Result<Vec<IngestionStatus>, ConnectorError>,
    ) -> Result<RecordOutcome, String> {
        let items = match answer {
            Ok(items) => items,
            // Stays `submitted`: asked again next run.
            Err(e) => return Ok(partner_failure(&e)),
        };
        match transaction_state(&items) {
            TransactionState::Processed(referral_id) => {
                let target = referral_id.as_deref().unwrap_or(txn);
                // Off the referral's path: written with its page's (`flush`).
                self.confirmed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((key.to_string(), FP_DELIVERED.to_string(), Some(target.to_string())));
                tracing::info!(transaction = txn, target, "proGres confirmed the referral");
                Ok(RecordOutcome::Sent {
                    target_id: Some(target.to_string()),
                })
            }
            TransactionState::Refused(status) => {
                self.remember(key, FP_REFUSED, Some(txn)).await?;
                tracing::warn!(transaction = txn, status, "proGres refused the referral");
                Ok(RecordOutcome::Failed {
                    code: REFUSED.into(),
                    reason: format!(
                        "PING check status of transaction {txn}: {status}; sent again next run"
                    ),
                })
            }
            TransactionState::Undecided(status) => Ok(RecordOutcome::Failed {
                code: "status-pending".into(),
                reason: format!(
                    "PING check status of transaction {txn}: {}; asked again next run",
                    status.as_deref().unwrap_or("no status yet")
                ),
            }),
        }
    }

    async fn send(
        &self,
        item: &EmittedReferral<PingPayload>,
        sharing: &SharingCheck,
    ) -> Result<RecordOutcome, String> {
        let key = item.service_id.as_str();
        // A field without a value is left out, as the original's undefined values.
        let record = item.payload.record.without_empty_fields();
        if let Err(refused) = sharing.check(Destination::PingReferralIngestion, &record) {
            return Ok(refused);
        }
        // Recorded before it is sent: a process that stops before the
        // answer is recorded must not leave the next run to send it again.
        self.remember(key, FP_SENDING, None).await?;
        let txn = match self
            .ping
            .ingest_async(&self.shipping_process, std::slice::from_ref(&record))
            .await
        {
            Ok(Some(txn)) => txn,
            Ok(None) => {
                // Accepted, but nothing to check against: count it as delivered
                // rather than risk a duplicate in proGres (the client warned).
                self.remember(key, FP_DELIVERED, None).await?;
                return Ok(RecordOutcome::Sent { target_id: None });
            }
            Err(e) if maybe_applied(&e) => {
                // PING may hold it (no transaction id to ask about): another
                // send could make a second proGres referral.
                return Ok(failed(
                    OUTCOME_UNKNOWN,
                    format!("{e}; check proGres before replaying"),
                ));
            }
            Err(e) => {
                // Refused outright: not in proGres, sent again next run.
                self.remember(key, FP_NOT_SENT, None).await?;
                return Ok(partner_failure(&e));
            }
        };
        // Recorded before its outcome is: a crash now must not lead to a
        // second referral. PING is asked meanwhile (a read, harmless if the
        // write fails); the outcome is recorded only after the write.
        let (written, answer) = tokio::join!(
            self.remember(key, FP_SUBMITTED, Some(&txn)),
            self.ping.check_status(&self.shipping_process, &txn)
        );
        written?;
        tracing::info!(transaction = %txn, "referral submitted to PING");
        self.settled(key, &txn, answer).await
    }
}

impl Deliver for PingDelivery<'_> {
    type Payload = PingPayload;

    async fn warm_up(&self) {
        if let Err(e) = self.ping.authenticate().await {
            tracing::debug!(error = %e, "PING token not obtained ahead; the first delivery asks again");
        }
    }

    async fn deliver(
        &self,
        item: &EmittedReferral<PingPayload>,
        previous: Option<&Delivery>,
        sharing: &SharingCheck,
    ) -> RecordOutcome {
        let key = item.service_id.as_str();
        if let Some(unknown) = left_sending(previous, self.replaying, "proGres") {
            return unknown;
        }
        let result = async {
            if let Some(txn) = previous
                .filter(|p| p.fingerprint == FP_SUBMITTED)
                .and_then(|p| p.target_id.as_deref())
            {
                // Submitted by an earlier run: its outcome decides whether to send again.
                match self.settle(key, txn).await? {
                    RecordOutcome::Failed { code, .. } if code == REFUSED => {}
                    settled => return Ok(settled),
                }
            }
            self.send(item, sharing).await
        }
        .await;
        result.unwrap_or_else(|reason| RecordOutcome::Failed {
            code: "state".into(),
            reason,
        })
    }

    async fn flush(&self) -> Result<(), String> {
        let confirmed = std::mem::take(&mut *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()));
        if confirmed.is_empty() {
            return Ok(());
        }
        self.store
            .record_deliveries(FLOW, &confirmed)
            .await
            .map_err(|e| e.to_string())
    }

    fn planned(
        &self,
        _item: &EmittedReferral<PingPayload>,
        previous: Option<&Delivery>,
    ) -> RecordOutcome {
        if let Some(unknown) = left_sending(previous, self.replaying, "proGres") {
            return unknown;
        }
        match previous
            .filter(|p| p.fingerprint == FP_SUBMITTED)
            .and_then(|p| p.target_id.clone())
        {
            // A real run asks about the earlier transaction first, and sends
            // again only when proGres refused it.
            Some(txn) => would_write("check-status-then-ingest-referral", Some(txn)),
            None => would_write("ingest-referral", None),
        }
    }
}

impl Ping21<'_> {
    /// Run the workflow once.
    pub async fn run(&self, run_id: &str, today: &str) -> RunReport {
        let mappings = self.catalog.mappings();
        let Some(sp) = mappings.shipping_processes.referral_ingestion.clone() else {
            return RunReport::aborted(
                FLOW,
                run_id,
                format!(
                    "{}/deployment.toml [shipping_processes] needs referral_ingestion",
                    mappings.dir.display()
                ),
            );
        };
        OutboundRun {
            records: self.records.clone(),
            flow: FLOW,
            primero: self.primero,
            store: self.store,
            catalog: self.catalog,
            ledger: self.ledger,
            stop: self.stop,
            holding: self.holding,
            concurrency: self.concurrency,
            initial_cursor: self.initial_cursor,
            dry_run: self.dry_run,
            associated_user: None,
            deliver: PingDelivery {
                ping: self.ping,
                store: self.store,
                shipping_process: sp,
                commits: GroupCommit::default(),
                confirmed: Default::default(),
                replaying: self.ledger.replay().is_some(),
            },
        }
        .run(run_id, today)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_partners::ping::parse_check_status;

    #[test]
    fn example_19_is_processed_with_the_referral_id() {
        let body = br#"{"Data":"[{\"Status\":\"Processed\",\"Data\":\"{\"progres_interoperabilityreferralid\":\"0b7f1c2e-9999-4a4a-9c9c-000000000009\"}\",\"Message\":\"OK\"}]"}"#;
        let items = parse_check_status(body).unwrap();
        assert_eq!(
            transaction_state(&items),
            TransactionState::Processed(Some("0b7f1c2e-9999-4a4a-9c9c-000000000009".into()))
        );
    }

    #[test]
    fn a_negative_status_is_refused_and_an_unknown_one_is_not_success() {
        let item = |s: &str| IngestionStatus {
            status: Some(s.into()),
            ..IngestionStatus::default()
        };
        assert_eq!(
            transaction_state(&[item("Failed")]),
            TransactionState::Refused("Failed".into())
        );
        assert_eq!(
            transaction_state(&[item("Processed"), item("Error")]),
            TransactionState::Refused("Error".into())
        );
        assert_eq!(
            transaction_state(&[item("In Progress")]),
            TransactionState::Undecided(Some("In Progress".into()))
        );
        assert_eq!(
            transaction_state(&[item("Quarantined")]),
            TransactionState::Undecided(Some("Quarantined".into()))
        );
        assert_eq!(transaction_state(&[]), TransactionState::Undecided(None));
    }
}

//! Primero caseworker decisions on proGres referrals → proGres, the part
//! both designs share (PING workflow 1.2, DTP flow 1-2): cases changed since
//! the cursor → the job, once per service (it decides which services carry
//! a decision and builds the partner payload) → a design-specific
//! [`SendDecision`]er.
//!
//! Better than the original (spec README):
//! - Every page is read, by keyset: page 1 of `last_updated_at >= <greatest
//!   seen>`, ascending, `per` = 1000 (Primero's cap), so cases edited during
//!   the run cannot shift a page and be skipped.
//! - The cursor is the greatest `last_updated_at` read (not "now", and PING
//!   1.2 now has one at all), held back to the case of any decision that
//!   failed for a reason outside the case (partner, state database, mapping
//!   table), and committed after the run. It is inclusive: what sits on it is
//!   read again and recognised through the state store.
//! - Each decision is sent once: the store keeps, per `<case id>/<service
//!   id>`, a fingerprint of the decision sent (status and reason, hashed), so
//!   touching a case does not re-send its decisions and a changed decision is
//!   sent again.
//! - A decision that cannot be sent is reported per service (e.g. a legacy
//!   intervention number, an unknown status), never dropped silently. A
//!   `bad-input` failure does not hold the cursor: fixing it means editing the
//!   case, which brings it back.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::audit_trail::{AuditContext, Share};
use super::case_scan::{CaseScan, CaseVisitor, ScanState};
use super::consent::{self, ConsentGate as _};
use super::consent_watch::ConsentWatch;
use super::ledger::Ledger;
use super::outbound_referrals::format_cursor;
use super::report::{failed, partner_failure, would_write, RecordOutcome, RecordReport, RunReport};
use super::sharing_check::SharingCheck;
use bridge_partners::primero::{Case, CaseOrderBy, CaseQuery, PrimeroClient, Service};
use bridge_partners::ConnectorError;
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobFailure, JobInstance, JobOutcome};
use bridge_store::Store;
use tokio_util::sync::CancellationToken;

/// Skip code of a service without a decision (jobs/lib/decisions.js); not reported.
pub const NOT_A_DECISION: &str = "not-a-decision";

/// The decision itself, as the job emits it: what is fingerprinted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `acknowledged` | `rejected` (spec §4.7).
    pub status: String,
    pub closure_reason: String,
}

impl Decision {
    /// SHA-256 hex of the status and the reason: the store keeps this, never
    /// the reason's text (free text may hold personal data).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.status.as_bytes());
        h.update([0]);
        h.update(self.closure_reason.as_bytes());
        hex::encode(h.finalize())
    }
}

/// What a decision job emits for one service; `P` is the design's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct EmittedDecision<P> {
    pub service_id: String,
    pub decision: Decision,
    #[serde(flatten)]
    pub payload: P,
}

/// What became of one send.
#[derive(Debug)]
pub enum Sent {
    /// The partner took it; the id it is known by there (system id), if any.
    Delivered { target_id: Option<String> },
    /// The partner answered but refused this record (reason: codes and ids only).
    Refused(String),
    /// The call failed.
    Failed(ConnectorError),
    /// Not sent: the body holds a field `sharing.toml` does not declare.
    NotShared(RecordOutcome),
    /// Not known to be applied: the call carrying it (with others) failed;
    /// the outcome says how.
    NotSent(RecordOutcome),
}

/// The design-specific last step: hand one decision to proGres.
#[allow(async_fn_in_trait)]
pub trait SendDecision {
    type Payload: DeserializeOwned;
    /// What `send` writes, as a dry run reports it (e.g. `ingest-transfer-status`).
    const ACTION: &'static str;

    /// The id the partner knows the decision by (system id), if any.
    fn target_id(&self, item: &EmittedDecision<Self::Payload>) -> Option<String>;

    /// Send `item`, its body first checked against `sharing`.
    async fn send(&self, item: &EmittedDecision<Self::Payload>, sharing: &SharingCheck) -> Sent;

    /// Send several (a page's decisions), each checked against `sharing`;
    /// what became of each, in order. One at a time unless the partner
    /// takes several in one call.
    async fn send_all(
        &self,
        items: &[&EmittedDecision<Self::Payload>],
        sharing: &SharingCheck,
    ) -> Vec<Sent> {
        let mut sent = Vec::with_capacity(items.len());
        for item in items {
            sent.push(self.send(item, sharing).await);
        }
        sent
    }
}

/// One run of an outgoing decision flow.
pub struct DecisionRun<'a, S> {
    /// A recorded run's: where the report streams its records.
    pub records: Option<crate::record_stream::RecordStream>,
    /// The flow; the job serving it is the catalog's (`Catalog::job_for`).
    pub flow: &'static str,
    pub primero: &'a PrimeroClient,
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    pub ledger: &'a Ledger<'a>,
    pub stop: &'a CancellationToken,
    pub send: S,
    /// Where the first run reads from when no cursor is stored.
    pub initial_cursor: Option<DateTime<Utc>>,
    /// Map and report, send nothing, keep the cursor.
    pub dry_run: bool,
}

/// The case fields a decision job reads (no personal data beyond the service).
#[derive(Serialize)]
struct CaseRef<'a> {
    id: &'a str,
    case_id: Option<&'a str>,
    owned_by: Option<&'a str>,
    last_updated_at: Option<String>,
}

/// The record bundle handed to the job (jobs/lib/decisions.js).
#[derive(Serialize)]
struct Bundle<'a> {
    case: CaseRef<'a>,
    service: &'a Service,
}

/// The store key of a decision: system ids only.
pub fn delivery_key(case_record_id: &str, service_id: &str) -> String {
    format!("{case_record_id}/{service_id}")
}

/// What one service came to, and whether the cursor must stay on its case.
struct ServiceResult {
    outcome: RecordOutcome,
    hold: bool,
}

impl ServiceResult {
    fn done(outcome: RecordOutcome) -> Self {
        Self {
            outcome,
            hold: false,
        }
    }

    fn retry(outcome: RecordOutcome) -> Self {
        Self {
            outcome,
            hold: true,
        }
    }
}

/// Per-run state of the job side: one instance, one context.
struct Visitor<'r, 'a, S: SendDecision> {
    run: &'r DecisionRun<'a, S>,
    instance: JobInstance,
    ctx: JobContext,
    /// Shared cases whose consent is watched; the gate's rules.
    watch: ConsentWatch,
    /// The audit of each share, refusal and revocation.
    audit: AuditContext,
    /// What this run may send (the run's mapping version).
    sharing: SharingCheck,
    /// The page's decisions to send, sent together when the page is done
    /// (PING takes them in one ingestion).
    pending: Vec<Pending<S::Payload>>,
}

/// What a record's outcome is reported, audited and held with.
struct Place {
    record_id: String,
    case_id: String,
    owner: Option<String>,
    last_updated_at: Option<DateTime<Utc>>,
    /// The consent the gate found (a refusal records `absent` anyway).
    basis: consent::Basis,
}

/// A decision ready to send.
struct Pending<P> {
    place: Place,
    item: EmittedDecision<P>,
    fingerprint: String,
}

/// A service's decision: its result now, or to be sent with the page's.
enum Step<P> {
    Done(ServiceResult),
    Send(EmittedDecision<P>, String),
}

impl<S: SendDecision> CaseVisitor for Visitor<'_, '_, S> {
    async fn visit(&mut self, case: &Case, _ahead: &[Case], st: &mut ScanState) {
        self.one_case(st, case).await
    }

    async fn end_page(&mut self, st: &mut ScanState) {
        self.send_pending(st).await
    }
}

impl<S: SendDecision> DecisionRun<'_, S> {
    /// Run the flow once. Partner and record errors end up in the report.
    pub async fn run(&self, run_id: &str, today: &str) -> RunReport {
        let span = tracing::info_span!("run", flow = self.flow, run = run_id);
        self.run_inner(run_id, today).instrument(span).await
    }

    async fn run_inner(&self, run_id: &str, today: &str) -> RunReport {
        // One job version and one mapping version for the whole run.
        let instance = match self.catalog.flow_instance(self.flow).await {
            Ok(i) => i,
            Err(e) => return RunReport::aborted(self.flow, run_id, e.to_string()),
        };
        let rules = instance.consent_policy();
        let watch = match ConsentWatch::load(self.store, rules, self.dry_run).await {
            Ok(w) => w,
            Err(e) => return RunReport::aborted(self.flow, run_id, e.to_string()),
        };
        let audit = AuditContext::new(self.flow, run_id, &instance, self.dry_run);
        let mut visitor = Visitor {
            audit,
            run: self,
            sharing: SharingCheck::for_instance(self.flow, &instance),
            instance,
            watch,
            pending: Vec::new(),
            ctx: JobContext {
                flow: self.flow.into(),
                run_id: run_id.into(),
                today: today.into(),
                dry_run: self.dry_run,
            },
        };
        let scan = CaseScan {
            flow: self.flow,
            primero: self.primero,
            store: self.store,
            ledger: self.ledger,
            stop: self.stop,
            query: &query,
            initial: self.initial_cursor,
            dry_run: self.dry_run,
        };
        let mut report = RunReport {
            flow: self.flow.into(),
            run_id: run_id.into(),
            dry_run: self.dry_run,
            ..RunReport::default()
        };
        report.stream_to(self.records.clone());
        let report = scan.run(report, &mut visitor).await;
        tracing::info!(
            cases = report.fetched,
            sent = report.count("sent"),
            already_sent = report.count("already sent"),
            would_send = report.count("would write"),
            failed = report.count("failed"),
            "run finished"
        );
        report
    }
}

fn query(from: Option<DateTime<Utc>>) -> CaseQuery {
    let q = CaseQuery::new().order_by(
        CaseOrderBy::LastUpdatedAt,
        bridge_partners::primero::SortOrder::Asc,
    );
    match from {
        Some(t) => q.updated_since(t),
        None => q,
    }
}

impl<S: SendDecision> Visitor<'_, '_, S> {
    async fn one_case(&mut self, st: &mut ScanState, case: &Case) {
        let ledger = self.run.ledger;
        let revoked = self
            .watch
            .observe(self.run.store, (self.run.flow, &self.ctx.run_id), case)
            .await;
        if let Some(line) = &revoked {
            let share = Share::new(Some(case.id.clone()), None, consent::Basis::Absent);
            self.audit
                .record(self.run.store, &line.source_id, &line.outcome, &share)
                .await;
        }
        st.report.extend(revoked);
        for service in &case.services_section {
            let record_id = delivery_key(
                &case.id,
                service.unique_id.as_deref().unwrap_or("(no unique_id)"),
            );
            if !ledger.selects(&record_id) {
                continue;
            }
            if let Some(parked) = ledger.parked(&record_id) {
                st.report.push(RecordReport {
                    source_id: record_id,
                    outcome: parked,
                    acknowledged: false,
                    ack_error: None,
                    would_acknowledge: None,
                });
                continue;
            }
            let span = tracing::info_span!("record", record = %record_id);
            let Some(step) = self
                .one_service(case, service, &record_id)
                .instrument(span.clone())
                .await
            else {
                continue;
            };
            let place = Place {
                record_id,
                case_id: case.id.clone(),
                owner: case.owned_by.clone().filter(|o| !o.is_empty()),
                last_updated_at: case.last_updated_at,
                // The basis the gate found (a refusal records `absent` anyway).
                basis: self
                    .watch
                    .rules()
                    .outbound(self.run.flow, case, false)
                    .unwrap_or(consent::Basis::Absent),
            };
            match step {
                Step::Done(result) => {
                    let entry = self.finish(st, place, result).instrument(span).await;
                    self.audit
                        .append(self.run.store, entry.into_iter().collect())
                        .await;
                }
                Step::Send(item, fingerprint) => self.pending.push(Pending {
                    place,
                    item,
                    fingerprint,
                }),
            }
        }
    }

    /// Send the page's decisions, remember the ones delivered (one
    /// transaction), then settle, audit and report each.
    async fn send_pending(&mut self, st: &mut ScanState) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let items: Vec<&EmittedDecision<S::Payload>> = pending.iter().map(|p| &p.item).collect();
        let sent = self.run.send.send_all(&items, &self.sharing).await;
        let delivered: Vec<(String, String, Option<String>)> = pending
            .iter()
            .zip(&sent)
            .filter_map(|(p, sent)| match sent {
                Sent::Delivered { target_id } => Some((
                    p.place.record_id.clone(),
                    p.fingerprint.clone(),
                    target_id.clone(),
                )),
                _ => None,
            })
            .collect();
        let remembered = self
            .run
            .store
            .record_deliveries(self.run.flow, &delivered)
            .await
            .map_err(|e| e.to_string());
        let mut shared = Vec::new();
        let mut results = Vec::with_capacity(pending.len());
        for (p, sent) in pending.iter().zip(sent) {
            let result = match sent {
                Sent::Delivered { target_id } => match &remembered {
                    Ok(()) => {
                        if p.place.basis == consent::Basis::Recorded {
                            shared.push(p.place.case_id.clone());
                        }
                        ServiceResult::done(RecordOutcome::Sent { target_id })
                    }
                    // Sent but not remembered: sent again next run (a repeat beats a loss).
                    Err(e) => ServiceResult::retry(failed("state", e.clone())),
                },
                Sent::Refused(reason) => ServiceResult::retry(failed("partner-refused", reason)),
                Sent::Failed(e) => ServiceResult::retry(partner_failure(&e)),
                Sent::NotShared(refused) | Sent::NotSent(refused) => ServiceResult::retry(refused),
            };
            results.push(result);
        }
        self.watch
            .shared_all(self.run.store, self.run.flow, shared)
            .await;
        let mut entries = Vec::new();
        for (p, result) in pending.into_iter().zip(results) {
            let span = tracing::info_span!("record", record = %p.place.record_id);
            entries.extend(self.finish(st, p.place, result).instrument(span).await);
        }
        // The page's audit entries in one append (one disk sync).
        self.audit.append(self.run.store, entries).await;
    }

    /// Count the attempt, audit, hold the cursor when it must be read
    /// again, report.
    /// Returns its audit entry, for the caller to append (a page's
    /// together).
    async fn finish(
        &mut self,
        st: &mut ScanState,
        place: Place,
        mut result: ServiceResult,
    ) -> Option<bridge_store::AuditEntry> {
        let ledger = self.run.ledger;
        let hint = place.last_updated_at.map(format_cursor);
        result.outcome = ledger
            .settle(&place.record_id, result.outcome, hint.as_deref())
            .await;
        let entry = self.audit.entry_to_append(
            &place.record_id,
            &result.outcome,
            &Share::new(
                Some(place.case_id.clone()),
                place.owner.clone(),
                place.basis,
            ),
        );
        // A dead-lettered decision no longer keeps the cursor.
        result.hold &= result.outcome.holds_cursor();
        if result.hold {
            // Read this case again next run.
            st.tracker.hold(place.last_updated_at);
        }
        tracing::info!(
            outcome = result.outcome.label(),
            held = result.hold,
            "decision handled"
        );
        let acknowledged = result.outcome.is_delivered();
        st.report.push(RecordReport {
            source_id: place.record_id,
            outcome: result.outcome,
            acknowledged,
            ack_error: None,
            would_acknowledge: None,
        });
        entry
    }

    async fn one_service(
        &mut self,
        case: &Case,
        service: &Service,
        record_id: &str,
    ) -> Option<Step<S::Payload>> {
        let bundle = Bundle {
            case: CaseRef {
                id: &case.id,
                case_id: case.case_id.as_deref(),
                owned_by: case.owned_by.as_deref(),
                last_updated_at: case.last_updated_at.map(format_cursor),
            },
            service,
        };
        let json = match serde_json::to_string(&bundle) {
            Ok(j) => j,
            Err(e) => {
                return Some(Step::Done(ServiceResult::retry(failed(
                    "internal",
                    e.to_string(),
                ))))
            }
        };
        let item = match self.instance.run(&self.ctx, record_id, &json).await {
            Ok(JobOutcome::Skip(reason)) if reason.split(':').next() == Some(NOT_A_DECISION) => {
                return None
            }
            Ok(JobOutcome::Skip(reason)) => {
                return Some(Step::Done(ServiceResult::done(RecordOutcome::Skipped {
                    reason,
                })))
            }
            // Bad data on the case: fixing it edits the case, which brings it back.
            Err(e @ JobFailure::BadInput { .. }) => {
                return Some(Step::Done(ServiceResult::done(failed(
                    e.code(),
                    e.to_string(),
                ))))
            }
            // Unmapped (fixed in the mapping folder) or a job problem: read again.
            Err(e) => {
                return Some(Step::Done(ServiceResult::retry(failed(
                    e.code(),
                    e.to_string(),
                ))))
            }
            Ok(JobOutcome::Emit(value)) => {
                match serde_json::from_value::<EmittedDecision<S::Payload>>(value) {
                    Ok(item) if Some(item.service_id.as_str()) == service.unique_id.as_deref() => {
                        item
                    }
                    Ok(_) => {
                        let why = format!(
                            "job {} emitted another service's decision",
                            self.instance.job().name
                        );
                        return Some(Step::Done(ServiceResult::retry(failed(
                            "job-invalid-output",
                            why,
                        ))));
                    }
                    Err(e) => {
                        let why = format!(
                            "job {} emitted an unexpected shape: {e}",
                            self.instance.job().name
                        );
                        return Some(Step::Done(ServiceResult::retry(failed(
                            "job-invalid-output",
                            why,
                        ))));
                    }
                }
            }
        };
        let fingerprint = item.decision.fingerprint();
        match self.run.store.delivery(self.run.flow, record_id).await {
            Ok(Some(previous)) if previous.fingerprint == fingerprint => {
                return Some(Step::Done(ServiceResult::done(
                    RecordOutcome::AlreadySent {
                        target_id: previous.target_id,
                    },
                )));
            }
            Ok(_) => {}
            Err(e) => {
                return Some(Step::Done(ServiceResult::retry(failed(
                    "state",
                    e.to_string(),
                ))))
            }
        }
        // Not remembered: a decision is looked at again whenever its case
        // changes, which recording consent does.
        if let Err(refusal) = self.watch.rules().outbound(self.run.flow, case, false) {
            return Some(Step::Done(ServiceResult::done(refusal)));
        }
        if self.run.dry_run {
            let target = self.run.send.target_id(&item);
            return Some(Step::Done(ServiceResult::done(would_write(
                S::ACTION,
                target,
            ))));
        }
        Some(Step::Send(item, fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_status_and_reason_only() {
        let a = Decision {
            status: "rejected".into(),
            closure_reason: "No capacity".into(),
        };
        let same = a.clone();
        let other_reason = Decision {
            closure_reason: "Other".into(),
            ..a.clone()
        };
        let other_status = Decision {
            status: "acknowledged".into(),
            ..a.clone()
        };
        assert_eq!(a.fingerprint(), same.fingerprint());
        assert_ne!(a.fingerprint(), other_reason.fingerprint());
        assert_ne!(a.fingerprint(), other_status.fingerprint());
        // Never the text itself.
        assert!(!a.fingerprint().contains("capacity"));
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn keys_are_system_ids() {
        assert_eq!(delivery_key("case-1", "svc-9"), "case-1/svc-9");
    }
}

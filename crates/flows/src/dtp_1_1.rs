//! DTP flow 1-1 (design A): proGres referrals pushed by DTP to the inbox →
//! Primero, answered per intervention by flow 1-4 (success notification) or
//! flow 1-3 (`Delivery Fail`).
//!
//! For each intervention of a `PrimeroOutgoingReferral` message: job
//! `dtp-1.1` → upsert by `unhcr_individual_no` (shared with
//! PING 1.1: [`super::case_upsert`]) → one notification to DTP.
//!
//! DTP sends one `interventions` row per language of an intervention (a
//! FetchXML join, OpenFn/primero-progres `sampleData/`): the rows of one
//! intervention number are one intervention, as in PING 1.1 — one service
//! with every language, one notification. Rows of one number that name
//! different individuals are not guessed between: `Delivery Fail`
//! (`invalid-data`).
//!
//! A referral for a child whose only case is closed reopens the case and
//! flags it for its owner (the original set it `open` and gave it to the
//! intake user, overwriting the caseworker's data; here only the service,
//! the status and a flag are written). The run report says so (note
//! `closed-case`).
//!
//! Better than the original (spec README, §5.2, §5.13): every intervention of
//! a message is handled and answered on its own (the original used only
//! `interventions[0]`); a re-sent intervention does not add a second service;
//! several matching cases hold the record (`ambiguous-match`) and DTP is told;
//! every failure class has a `closure_reason` (mapping table
//! `delivery-fail-reasons`), including Primero refusing or being unreachable,
//! where the original told DTP nothing. A transient failure (Primero or DTP
//! unreachable, 5xx) makes the message [`HandlerError::Retryable`] without a
//! notification for that intervention; only when the handler's attempts are
//! used up is it answered `Delivery Fail` (`partner-unavailable`).
//!
//! Retries re-run the whole message. That is safe: the upsert is idempotent,
//! and each notification is sent once per intervention and outcome, however
//! often DTP posts the message — the store remembers which were sent (key
//! `notified/<intervention number>/<outcome>`), and counts
//! the message's attempts (key `attempts/<receipt id>`). Only system ids,
//! outcome codes and counts are stored.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use super::audit_trail::{progres_user, AuditContext, Share};
use super::consent::ConsentGate as _;
use super::case_lookup::LookupError;
use super::case_upsert::{upsert_case, CaseReferral, ClosedCase, UpsertError, Upserted};
use super::report::{partner_failure, Note, RecordNote, RecordOutcome, RecordReport, RunReport};
use super::sharing_check::{Destination, SharingCheck};
use crate::app::App;
use bridge_partners::dtp::{DtpClient, DtpEndpoint};
use bridge_partners::primero::{Case, PrimeroClient};
use bridge_partners::ConnectorError;
use crate::pushed::{HandlerError, InboxHandler, InboxKind, MessageClaim};
use crate::registry::{Design, FlowSpec, Intake, Partner};
use bridge_mappings::MappingSet;
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobFailure, JobInstance, JobOutcome};
use bridge_store::Store;

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "dtp-1.1";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "proGres referral pushed by DTP → Primero case, answered by 1-3/1-4 (DTP flow 1-1)",
    design: Design::Dtp,
    intake: Intake::Pushed(InboxKind::PrimeroOutgoingReferral, handler),
    partners: &[Partner::Primero, Partner::Dtp],
};

fn handler(app: &App) -> anyhow::Result<Arc<dyn InboxHandler>> {
    Ok(Arc::new(Handler::new(app)?))
}
/// Mapping table: failure class → `closure_reason` sent to DTP.
pub const FAIL_REASONS_TABLE: &str = "delivery-fail-reasons";
/// Attempts of one message before a transient failure is final.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Flow 1-4 `status`.
pub const STATUS_PENDING_ACKNOWLEDGEMENT: &str = "Pending Acknowledgement";
/// Flow 1-3 `status`.
pub const STATUS_DELIVERY_FAIL: &str = "Delivery Fail";
/// Flow 1-3 `request_type`.
pub const REQUEST_TYPE_FEEDBACK: &str = "Feedback";
/// Flow 1-4 `primero_user` when the case has no owner (spec §1.A).
pub const USER_NOT_DEFINED: &str = "Not defined";

/// Why an intervention was not delivered; each has a `closure_reason` in
/// the `delivery-fail-reasons` table, under [`code`](Self::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// A required field is absent or empty.
    MissingFields,
    /// A value is malformed or has no mapping (other than the service type).
    InvalidData,
    /// The intervention type is not an accepted service type.
    UnacceptedServiceType,
    /// Several Primero cases carry the individual id.
    AmbiguousMatch,
    /// Primero refused the write (4xx, unexpected answer).
    PartnerError,
    /// Primero stayed unreachable for every attempt.
    PartnerUnavailable,
    /// The bridge could not process the record (job error, bad job output).
    InternalError,
}

impl FailureClass {
    pub const ALL: [FailureClass; 7] = [
        FailureClass::MissingFields,
        FailureClass::InvalidData,
        FailureClass::UnacceptedServiceType,
        FailureClass::AmbiguousMatch,
        FailureClass::PartnerError,
        FailureClass::PartnerUnavailable,
        FailureClass::InternalError,
    ];

    pub fn code(self) -> &'static str {
        match self {
            FailureClass::MissingFields => "missing-fields",
            FailureClass::InvalidData => "invalid-data",
            FailureClass::UnacceptedServiceType => "unaccepted-service-type",
            FailureClass::AmbiguousMatch => "ambiguous-match",
            FailureClass::PartnerError => "partner-error",
            FailureClass::PartnerUnavailable => "partner-unavailable",
            FailureClass::InternalError => "internal-error",
        }
    }

    /// The class of a job error. `lib/fields.js` `requireFields` reasons
    /// start with "required field"; every other bad input is invalid data.
    pub fn of_job_failure(e: &JobFailure) -> Self {
        match e {
            JobFailure::BadInput { reason, .. } if reason.starts_with("required field") => {
                FailureClass::MissingFields
            }
            JobFailure::BadInput { .. } => FailureClass::InvalidData,
            JobFailure::Unmapped { table, .. } if table == SERVICE_TYPES_TABLE => {
                FailureClass::UnacceptedServiceType
            }
            JobFailure::Unmapped { .. } => FailureClass::InvalidData,
            _ => FailureClass::InternalError,
        }
    }
}

/// The job's service-type gate table (spec §4.1).
const SERVICE_TYPES_TABLE: &str = "inbound-service-types";

/// Flow 1-4 body (example 04). No `request_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuccessNotification {
    pub status: &'static str,
    /// Owner of the case now holding the service, else "Not defined".
    pub primero_user: String,
    /// Primero `case_id`, else the record id.
    pub case_id: String,
    pub progres_interventionnumber: String,
}

impl SuccessNotification {
    pub fn new(case: &Case, intervention_number: &str) -> Self {
        Self {
            status: STATUS_PENDING_ACKNOWLEDGEMENT,
            primero_user: case
                .owned_by
                .clone()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| USER_NOT_DEFINED.to_string()),
            case_id: case
                .case_id
                .clone()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| case.id.clone()),
            progres_interventionnumber: intervention_number.to_string(),
        }
    }
}

/// Flow 1-3 body (example 05).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureNotification {
    /// `null` only if the intervention had none (the inbox refuses such messages).
    pub progres_interventionnumber: Option<String>,
    pub status: &'static str,
    pub closure_reason: String,
    pub request_type: &'static str,
}

impl FailureNotification {
    pub fn new(intervention_number: Option<&str>, closure_reason: &str) -> Self {
        Self {
            progres_interventionnumber: intervention_number.map(str::to_string),
            status: STATUS_DELIVERY_FAIL,
            closure_reason: closure_reason.to_string(),
            request_type: REQUEST_TYPE_FEEDBACK,
        }
    }
}

/// `closure_reason` per failure class, from the mapping set.
#[derive(Debug, Clone)]
pub struct ClosureReasons(Vec<(FailureClass, String)>);

impl ClosureReasons {
    /// Every class must have a reason: an error names the file and the key.
    pub fn from_mappings(mappings: &MappingSet) -> Result<Self, String> {
        let file = mappings.dir.join(format!("{FAIL_REASONS_TABLE}.toml"));
        let table = mappings
            .tables
            .get(FAIL_REASONS_TABLE)
            .ok_or_else(|| format!("{}: missing (needed by flow {FLOW})", file.display()))?;
        FailureClass::ALL
            .iter()
            .map(|&class| {
                table
                    .get(class.code())
                    .map(|reason| (class, reason.to_string()))
                    .ok_or_else(|| {
                        format!(
                            "{}: key `map.{}`: no closure reason for this failure class",
                            file.display(),
                            class.code()
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn get(&self, class: FailureClass) -> &str {
        self.0
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, r)| r.as_str())
            .unwrap_or_default()
    }
}

/// What became of one intervention before DTP is told.
enum Delivery {
    /// Primero holds the service.
    Delivered {
        case: Box<Case>,
        outcome: RecordOutcome,
        /// What the report should say besides the outcome.
        note: Option<Note>,
    },
    /// Given up on: DTP gets a `Delivery Fail`.
    Failed {
        class: FailureClass,
        outcome: RecordOutcome,
    },
    /// Worth another attempt of the message: DTP is not told yet.
    Transient { outcome: RecordOutcome },
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerSetupError {
    #[error("flow {FLOW} posts notifications to DTP: the config has no [dtp] section")]
    NoDtpClient,
}

/// The inbox handler of `PrimeroOutgoingReferral` messages.
pub struct Handler {
    primero: PrimeroClient,
    dtp: DtpClient,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    max_attempts: u32,
}

impl Handler {
    /// From the application's clients (needs its DTP client).
    pub fn new(app: &App) -> Result<Self, HandlerSetupError> {
        let dtp = app.dtp.clone().ok_or(HandlerSetupError::NoDtpClient)?;
        Ok(Self::from_parts(
            app.primero.clone(),
            dtp,
            app.catalog.clone(),
            app.store.clone(),
        ))
    }

    pub fn from_parts(
        primero: PrimeroClient,
        dtp: DtpClient,
        catalog: Arc<Catalog>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            primero,
            dtp,
            catalog,
            store,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Attempts of one message before a transient failure is final (≥ 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Failed attempts of this message so far.
    async fn attempts_so_far(&self, receipt_id: &str) -> Result<u32, HandlerError> {
        let previous = self
            .store
            .delivery(FLOW, &attempts_key(receipt_id))
            .await
            .map_err(|e| HandlerError::Retryable(e.to_string()))?;
        Ok(previous
            .and_then(|d| d.fingerprint.parse().ok())
            .unwrap_or(0))
    }

    async fn handle_inner(
        &self,
        receipt_id: &str,
        body: &Value,
        today: &str,
        claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError> {
        let Some(interventions) = body.get("interventions").and_then(Value::as_array) else {
            return Err(HandlerError::Permanent(
                "message has no `interventions` list".into(),
            ));
        };
        // Configuration problems keep the message: an operator fixes the
        // mappings or the job (hot reload) and it is processed again.
        let reasons = ClosureReasons::from_mappings(&self.catalog.mappings())
            .map_err(HandlerError::Retryable)?;
        let mut instance = match self.catalog.flow_instance(FLOW).await {
            Ok(i) => i,
            Err(e) => return Err(HandlerError::Retryable(e.to_string())),
        };
        let attempt = self.attempts_so_far(receipt_id).await? + 1;
        let last_attempt = attempt >= self.max_attempts;
        let ctx = JobContext {
            flow: FLOW.into(),
            run_id: receipt_id.into(),
            today: today.into(),
            dry_run: false,
        };
        let grouped = group_interventions(interventions);
        let mut report = RunReport {
            flow: FLOW.into(),
            run_id: receipt_id.into(),
            fetched: grouped.len(),
            ..RunReport::default()
        };
        // What this message's processing remembers, refused once another
        // replica claimed the message.
        let store = claim.fenced(self.store.clone());
        let mut retry = false;
        for intervention in &grouped {
            claim.check()?;
            let span = tracing::info_span!(
                "record",
                record = intervention.number.as_deref().unwrap_or("(none)"),
                index = intervention.index,
                rows = intervention.rows.len()
            );
            let (record, again, note) = self
                .one(
                    &mut instance,
                    &ctx,
                    &reasons,
                    (receipt_id, claim, store.as_ref()),
                    intervention,
                    last_attempt,
                )
                .instrument(span)
                .await;
            // Not told to DTP because the claim was lost: left to the
            // replica that holds the message now.
            claim.check()?;
            retry |= again;
            if let Some(note) = note {
                report
                    .notes
                    .push(RecordNote::new(record.source_id.clone(), note));
            }
            report.push(record);
        }
        tracing::info!(
            attempt,
            created = report.count("created"),
            updated = report.count("updated"),
            already_present = report.count("already present"),
            held = report.count("held"),
            failed = report.count("failed"),
            notified = report.acknowledged(),
            "message handled"
        );
        if retry {
            if let Err(e) = store
                .record_delivery(FLOW, &attempts_key(receipt_id), &attempt.to_string(), None)
                .await
            {
                tracing::warn!(error = %e, "could not count the attempt");
            }
            let why: Vec<String> = report
                .records
                .iter()
                .filter_map(|r| match &r.outcome {
                    RecordOutcome::Failed { code, reason } if code == "partner-unavailable" => {
                        Some(format!("{}: {reason}", r.source_id))
                    }
                    _ => r
                        .ack_error
                        .as_ref()
                        .map(|e| format!("{}: {e}", r.source_id)),
                })
                .collect();
            return Err(HandlerError::Retryable(format!(
                "attempt {attempt} of {}: {}",
                self.max_attempts,
                why.join("; ")
            )));
        }
        Ok(report)
    }

    /// Deliver one intervention and tell DTP. Returns the record report,
    /// whether the message needs another attempt for it, and a note for the
    /// report.
    async fn one(
        &self,
        instance: &mut JobInstance,
        ctx: &JobContext,
        reasons: &ClosureReasons,
        (receipt_id, claim, store): (&str, &MessageClaim, &dyn Store),
        intervention: &Intervention<'_>,
        last_attempt: bool,
    ) -> (RecordReport, bool, Option<Note>) {
        let index = intervention.index;
        let number = intervention.number.clone();
        let delivery = self
            .deliver(instance, ctx, intervention, claim.holding())
            .await;
        let mut record_note = None;
        let failure = |class: FailureClass| {
            let body = FailureNotification::new(number.as_deref(), reasons.get(class));
            (Notification::Failure(body), class.code(), None)
        };
        let (outcome, (note, fingerprint, target)) = match delivery {
            Delivery::Transient { outcome } if !last_attempt => {
                tracing::info!(
                    outcome = outcome.label(),
                    "Primero unavailable; DTP not told yet"
                );
                let record = RecordReport {
                    source_id: source_id(number.as_deref(), index),
                    outcome,
                    acknowledged: false,
                    ack_error: None,
                    would_acknowledge: None,
                };
                return (record, true, None);
            }
            Delivery::Transient { outcome } => (outcome, failure(FailureClass::PartnerUnavailable)),
            Delivery::Failed { class, outcome } => (outcome, failure(class)),
            Delivery::Delivered {
                case,
                outcome,
                note: delivered_note,
            } => {
                record_note = delivered_note;
                let body = SuccessNotification::new(&case, number.as_deref().unwrap_or_default());
                (
                    outcome,
                    (Notification::Success(body), "delivered", Some(case.id)),
                )
            }
        };
        let source = source_id(number.as_deref(), index);
        let progres_record = intervention.record();
        let share = Share::new(
            target.clone(),
            progres_user(&progres_record),
            instance.consent_policy().inbound(&progres_record).0,
        );
        AuditContext::new(FLOW, receipt_id, instance, false)
            .record(self.store.as_ref(), &source, &outcome, &share)
            .await;
        let mut record = RecordReport {
            source_id: source,
            outcome,
            acknowledged: false,
            ack_error: None,
            would_acknowledge: None,
        };
        let key = notified_key(receipt_id, index, number.as_deref(), fingerprint);
        match self.store.delivery(FLOW, &key).await {
            Ok(Some(_)) => {
                // Told in an earlier attempt of this message.
                record.acknowledged = true;
                tracing::info!(outcome = record.outcome.label(), "DTP already told");
                return (record, false, record_note);
            }
            Ok(None) => {}
            // A possible second notification beats none.
            Err(e) => tracing::warn!(error = %e, "could not read the notification state"),
        }
        let sharing = SharingCheck::for_instance(FLOW, instance);
        let checked = match &note {
            Notification::Success(b) => sharing.check(Destination::DtpNotification, b),
            Notification::Failure(b) => sharing.check(Destination::DtpNotification, b),
        };
        if let Err(refused) = checked {
            // Not sent: DTP is not told until the declaration allows it.
            record.ack_error = Some(match refused {
                RecordOutcome::Failed { reason, .. } => reason,
                other => other.label().to_string(),
            });
            return (record, false, record_note);
        }
        if claim.holding().is_lost() {
            record.ack_error = Some("DTP not told: the claim on the message was lost".into());
            return (record, false, record_note);
        }
        let sent = match &note {
            Notification::Success(b) => self.dtp.post(DtpEndpoint::Notification, b).await,
            Notification::Failure(b) => self.dtp.post(DtpEndpoint::Notification, b).await,
        };
        let again = match sent {
            Ok(()) => {
                record.acknowledged = true;
                if let Err(e) = store
                    .record_delivery(FLOW, &key, fingerprint, target.as_deref())
                    .await
                {
                    tracing::warn!(error = %e, "could not remember the notification");
                }
                false
            }
            Err(e) => {
                let again = e.is_transient() && !last_attempt;
                record.ack_error = Some(e.to_string());
                again
            }
        };
        tracing::info!(
            outcome = record.outcome.label(),
            notification = note.kind(),
            code = fingerprint,
            notified = record.acknowledged,
            "record handled"
        );
        (record, again, record_note)
    }

    /// Map and write one intervention.
    async fn deliver(
        &self,
        instance: &mut JobInstance,
        ctx: &JobContext,
        intervention: &Intervention<'_>,
        holding: &crate::lease::Holding,
    ) -> Delivery {
        let number = intervention.number.as_deref();
        let failed = |class: FailureClass, code: &str, reason: String| Delivery::Failed {
            class,
            outcome: RecordOutcome::Failed {
                code: code.to_string(),
                reason,
            },
        };
        if intervention.individuals_disagree() {
            return failed(
                FailureClass::InvalidData,
                "bad-input",
                format!(
                    "the {} rows of the intervention name different individuals.progres_id",
                    intervention.rows.len()
                ),
            );
        }
        let record = intervention.record();
        let json = match serde_json::to_string(&record) {
            Ok(j) => j,
            Err(e) => return failed(FailureClass::InternalError, "internal", e.to_string()),
        };
        // DTP names no consent today; a country whose proGres does says where.
        let consent = instance.consent_policy();
        let (_, given) = consent.inbound(&record);
        let mut referral = match instance.run(ctx, number.unwrap_or_default(), &json).await {
            Ok(JobOutcome::Emit(value)) => match serde_json::from_value::<CaseReferral>(value) {
                Ok(r) => r,
                Err(e) => {
                    return failed(
                        FailureClass::InternalError,
                        "job-invalid-output",
                        format!("job {FLOW} emitted an unexpected shape: {e}"),
                    )
                }
            },
            // The job never skips; should a version do so, DTP still hears.
            Ok(JobOutcome::Skip(reason)) => {
                return Delivery::Failed {
                    class: FailureClass::InternalError,
                    outcome: RecordOutcome::Skipped { reason },
                }
            }
            Err(e) => {
                let class = FailureClass::of_job_failure(&e);
                return failed(class, class.code(), e.to_string());
            }
        };
        consent.apply_inbound(&mut referral.case, given);
        let on_closed = ClosedCase::ReopenAndFlag { date: &ctx.today };
        let sharing = SharingCheck::for_instance(FLOW, instance);
        match upsert_case(&self.primero, &referral, on_closed, &sharing, holding).await {
            Ok(done) => {
                let outcome = done.outcome();
                let note = done.note();
                if let Some(Note::ClosedCase {
                    case_id,
                    reopened,
                    flag_id,
                    ..
                }) = &note
                {
                    tracing::info!(
                        case = %case_id,
                        reopened,
                        flag = flag_id.as_deref().unwrap_or("none"),
                        "the case was closed"
                    );
                }
                match done {
                    Upserted::Ambiguous { .. } => Delivery::Failed {
                        class: FailureClass::AmbiguousMatch,
                        outcome,
                    },
                    Upserted::Created(case)
                    | Upserted::Appended(case)
                    | Upserted::AlreadyPresent(case)
                    | Upserted::Reopened { case, .. } => Delivery::Delivered {
                        case: Box::new(case),
                        outcome,
                        note,
                    },
                }
            }
            Err(UpsertError::NoService) => failed(
                FailureClass::InternalError,
                "job-invalid-output",
                format!("job {FLOW} emitted a case without a service"),
            ),
            Err(UpsertError::Partner(e)) => partner(&e),
            // A body the declaration does not allow: bad job output, DTP hears it.
            Err(UpsertError::Refused(outcome)) => Delivery::Failed {
                class: FailureClass::InternalError,
                outcome,
            },
            // Tried again with the message: DTP is not told yet.
            Err(e @ UpsertError::NotApplied { .. }) => Delivery::Transient {
                outcome: super::report::failed(super::case_upsert::NOT_APPLIED, e.to_string()),
            },
            // DTP's data is wrong: DTP hears it.
            Err(UpsertError::Lookup(e @ LookupError::Malformed { .. })) => Delivery::Failed {
                class: FailureClass::InvalidData,
                outcome: e.outcome(),
            },
            // The role needs fixing: tried again with the message, DTP is not told.
            Err(UpsertError::Lookup(e)) => Delivery::Transient {
                outcome: e.outcome(),
            },
            // Not sent again (it would create another case); the operator
            // completes the case in Primero.
            Err(e @ UpsertError::Incomplete { .. }) => Delivery::Failed {
                class: FailureClass::PartnerError,
                outcome: super::report::failed(super::case_upsert::WRITE_INCOMPLETE, e.to_string()),
            },
            // Left to the replica that holds the message: DTP is not told.
            Err(e @ UpsertError::NotHeld) => Delivery::Transient {
                outcome: super::report::failed(super::case_upsert::NOT_HELD, e.to_string()),
            },
        }
    }
}

fn partner(e: &ConnectorError) -> Delivery {
    let outcome = partner_failure(e);
    if e.is_transient() {
        Delivery::Transient { outcome }
    } else {
        Delivery::Failed {
            class: FailureClass::PartnerError,
            outcome,
        }
    }
}

enum Notification {
    Success(SuccessNotification),
    Failure(FailureNotification),
}

impl Notification {
    fn kind(&self) -> &'static str {
        match self {
            Notification::Success(_) => "success",
            Notification::Failure(_) => "delivery-fail",
        }
    }
}

/// The report's id of an intervention: its number (a proGres system id).
fn source_id(number: Option<&str>, index: usize) -> String {
    number.map_or_else(
        || format!("(intervention {index} without a number)"),
        str::to_string,
    )
}

/// One intervention of a message: DTP sends a row per language of it.
struct Intervention<'a> {
    /// Index of its first row: names it in the report and keys its
    /// notification (as before rows were grouped).
    index: usize,
    number: Option<String>,
    rows: Vec<&'a Value>,
}

/// Key of the language lookup of a DTP row.
const LANGUAGE: &str = "languages.progres_languagecodeid";
const INDIVIDUAL: &str = "individuals.progres_id";

impl Intervention<'_> {
    /// The job's record: the first row and the languages of all rows (by
    /// their lookup `Name`, distinct, in row order).
    fn record(&self) -> Value {
        let mut languages: Vec<&str> = Vec::new();
        for row in &self.rows {
            let name = match row.get(LANGUAGE) {
                Some(Value::Object(lookup)) => lookup.get("Name").and_then(Value::as_str),
                Some(Value::String(s)) => Some(s.as_str()),
                _ => None,
            };
            if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) {
                if !languages.contains(&name) {
                    languages.push(name);
                }
            }
        }
        serde_json::json!({ "intervention": self.rows[0], "languages": languages })
    }

    /// Whether its rows name different individuals (then none is trusted).
    fn individuals_disagree(&self) -> bool {
        let first = self.rows[0].get(INDIVIDUAL);
        self.rows[1..].iter().any(|r| r.get(INDIVIDUAL) != first)
    }
}

/// The message's rows grouped by intervention number, in first-seen order.
/// A row without a number is an intervention of its own.
fn group_interventions(rows: &[Value]) -> Vec<Intervention<'_>> {
    let mut groups: Vec<Intervention<'_>> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let number = intervention_number(row);
        match groups
            .iter_mut()
            .find(|g| number.is_some() && g.number == number)
        {
            Some(group) => group.rows.push(row),
            None => groups.push(Intervention {
                index,
                number,
                rows: vec![row],
            }),
        }
    }
    groups
}

/// What a sent notification is remembered by: the intervention and the
/// outcome told, so the same message posted again (or another message for
/// the same intervention with the same outcome) is not told twice. An
/// intervention without a number is known only by its message and place.
fn notified_key(receipt_id: &str, index: usize, number: Option<&str>, outcome: &str) -> String {
    match number {
        Some(number) => format!("notified/{number}/{outcome}"),
        None => format!("{receipt_id}/{index}"),
    }
}

fn attempts_key(receipt_id: &str) -> String {
    format!("attempts/{receipt_id}")
}

/// The intervention's `progres_interventionnumber`, trimmed, if any.
fn intervention_number(row: &Value) -> Option<String> {
    row.get("progres_interventionnumber")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

#[async_trait]
impl InboxHandler for Handler {
    async fn handle(
        &self,
        kind: InboxKind,
        receipt_id: &str,
        body: &Value,
        today: &str,
        claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError> {
        if kind != InboxKind::PrimeroOutgoingReferral {
            return Err(HandlerError::wrong_kind(
                FLOW,
                InboxKind::PrimeroOutgoingReferral,
                kind,
            ));
        }
        let span = tracing::info_span!("run", flow = FLOW, run = receipt_id);
        self.handle_inner(receipt_id, body, today, claim)
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_failure_class(e: JobFailure) -> &'static str {
        FailureClass::of_job_failure(&e).code()
    }

    #[test]
    fn job_errors_are_classified() {
        let job = || FLOW.to_string();
        assert_eq!(
            job_failure_class(JobFailure::BadInput {
                job: job(),
                field: "individuals.progres_dateofbirth".into(),
                reason: "required field missing or empty: individuals.progres_dateofbirth".into(),
            }),
            "missing-fields"
        );
        assert_eq!(
            job_failure_class(JobFailure::BadInput {
                job: job(),
                field: "individuals.progres_dateofbirth".into(),
                reason: "not an ISO date (YYYY-MM-DD…)".into(),
            }),
            "invalid-data"
        );
        assert_eq!(
            job_failure_class(JobFailure::Unmapped {
                job: job(),
                table: "inbound-service-types".into(),
                value: "BID / BIA conducted".into(),
            }),
            "unaccepted-service-type"
        );
        assert_eq!(
            job_failure_class(JobFailure::Unmapped {
                job: job(),
                table: "inbound-sex".into(),
                value: "9".into(),
            }),
            "invalid-data"
        );
        assert_eq!(
            job_failure_class(JobFailure::Fatal {
                job: job(),
                message: "x".into(),
            }),
            "internal-error"
        );
    }

    fn gambella() -> MappingSet {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings/ethiopia-gambella");
        MappingSet::load_dir(&dir).unwrap()
    }

    #[test]
    fn gambella_has_a_closure_reason_for_every_class() {
        let reasons = ClosureReasons::from_mappings(&gambella()).unwrap();
        for class in FailureClass::ALL {
            assert!(!reasons.get(class).is_empty(), "{}", class.code());
        }
        // The original's texts (spec §1.A flow 1-3), kept verbatim.
        assert_eq!(
            reasons.get(FailureClass::UnacceptedServiceType),
            "Intervention type value shared is not one of the 4 accepted interagency referral service types. Please see the mapping specifications."
        );
    }

    #[test]
    fn a_missing_closure_reason_names_the_file_and_key() {
        let mut set = gambella();
        set.tables
            .get_mut(FAIL_REASONS_TABLE)
            .unwrap()
            .map
            .remove("partner-error");
        let err = ClosureReasons::from_mappings(&set).unwrap_err();
        assert!(err.contains("delivery-fail-reasons.toml"), "{err}");
        assert!(err.contains("map.partner-error"), "{err}");
    }

    // Spec examples 04 and 05, compacted (key order as in the files).
    const EXAMPLE_04: &str = r#"{"status":"Pending Acknowledgement","primero_user":"progresv4_primero_intake@cpims-gambella.primero.org","case_id":"3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2","progres_interventionnumber":"803-24-PRTITV-1000123"}"#;
    const EXAMPLE_05: &str = r#"{"progres_interventionnumber":"803-24-PRTITV-1000124","status":"Delivery Fail","closure_reason":"Intervention type value shared is not one of the 4 accepted interagency referral service types. Please see the mapping specifications.","request_type":"Feedback"}"#;

    #[test]
    fn notification_bodies_are_the_examples_byte_for_byte() {
        let case = Case {
            id: "6f0c7a10-aaaa-4bbb-8ccc-0000000000a1".into(),
            case_id: Some("3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2".into()),
            owned_by: Some("progresv4_primero_intake@cpims-gambella.primero.org".into()),
            ..Case::default()
        };
        let success = SuccessNotification::new(&case, "803-24-PRTITV-1000123");
        assert_eq!(serde_json::to_string(&success).unwrap(), EXAMPLE_04);
        let failure = FailureNotification::new(
            Some("803-24-PRTITV-1000124"),
            "Intervention type value shared is not one of the 4 accepted interagency referral service types. Please see the mapping specifications.",
        );
        assert_eq!(serde_json::to_string(&failure).unwrap(), EXAMPLE_05);
    }

    #[test]
    fn rows_of_one_intervention_are_grouped_with_their_languages() {
        let lang = |name: &str| serde_json::json!({"Id": "x", "Name": name});
        let rows = vec![
            serde_json::json!({"progres_interventionnumber": "N-1", INDIVIDUAL: "803-1", LANGUAGE: lang("French")}),
            serde_json::json!({"progres_interventionnumber": "N-2", INDIVIDUAL: "803-2", LANGUAGE: lang("Nuer")}),
            serde_json::json!({"progres_interventionnumber": "N-1", INDIVIDUAL: "803-1", LANGUAGE: lang("English")}),
            serde_json::json!({"progres_interventionnumber": "N-1", INDIVIDUAL: "803-1", LANGUAGE: lang("French")}),
            serde_json::json!({"progres_interventionnumber": " ", INDIVIDUAL: "803-3"}),
            serde_json::json!({INDIVIDUAL: "803-4"}),
        ];
        let groups = group_interventions(&rows);
        let shape: Vec<(usize, Option<&str>, usize)> = groups
            .iter()
            .map(|g| (g.index, g.number.as_deref(), g.rows.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, Some("N-1"), 3),
                (1, Some("N-2"), 1),
                (4, None, 1),
                (5, None, 1)
            ]
        );
        let record = groups[0].record();
        assert_eq!(
            record["languages"],
            serde_json::json!(["French", "English"])
        );
        assert_eq!(record["intervention"], rows[0]);
        assert!(!groups[0].individuals_disagree());
        let mixed = [rows[0].clone(), rows[1].clone()];
        let one = Intervention {
            index: 0,
            number: Some("N-1".into()),
            rows: mixed.iter().collect(),
        };
        assert!(one.individuals_disagree());
    }

    #[test]
    fn success_falls_back_to_record_id_and_not_defined() {
        let case = Case {
            id: "rec-1".into(),
            ..Case::default()
        };
        let n = SuccessNotification::new(&case, "803-24-PRTITV-1");
        assert_eq!(n.case_id, "rec-1");
        assert_eq!(n.primero_user, USER_NOT_DEFINED);
    }
}

//! DTP flow 2-3 (design A): proGres decisions on Primero referrals, pushed by
//! DTP to the inbox (`PrimeroIncomingReferralDecision`, example 11) → the
//! Primero referral (example 12).
//!
//! For each item of `interventions`: job `dtp-2.3` → the case
//! by `case_id` → the referral whose `service_record_id` ends with the 12
//! characters after '#' in `progres_orgreferralid` → PATCH
//! ([`super::referral_decision`]).
//!
//! Better than the original (spec README): every item is handled on its own
//! (the original failed the whole message on the first error); an unknown
//! review decision fails the item instead of being written raw; an unknown
//! rejection-reason code does not hold the decision back: it goes with the
//! raw code as its reason and the run report warns of the mapping gap
//! (`mapping-gap`, table and code); several matching cases or open
//! referrals hold the item (`ambiguous-match`); a decision Primero will not
//! take is held (`decision-conflict`). When Primero is unreachable the
//! message is kept ([`HandlerError::Retryable`]); handling it again is safe
//! because a referral already carrying the decision counts as done. No
//! message goes back to DTP (as the original).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::audit_trail::{progres_user, AuditContext, Share};
use bridge_store::ConsentBasis;
use super::referral_decision::{
    apply_decision, is_transient, Apply, InboundDecision, ServiceMatch,
};
use super::report::{failed, MappingGap, RecordNote, RecordOutcome, RecordReport, RunReport};
use crate::app::App;
use bridge_partners::primero::PrimeroClient;
use crate::pushed::{HandlerError, InboxHandler, InboxKind, MessageClaim};
use crate::registry::{Design, FlowSpec, Intake, Partner};
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobInstance, JobOutcome};

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "dtp-2.3";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "proGres decision pushed by DTP → Primero referral (DTP flow 2-3)",
    design: Design::Dtp,
    intake: Intake::Pushed(InboxKind::PrimeroIncomingReferralDecision, handler),
    partners: &[Partner::Primero],
};

fn handler(app: &App) -> anyhow::Result<Arc<dyn InboxHandler>> {
    Ok(Arc::new(Handler::new(app)))
}

/// What the job emits for one item.
#[derive(Debug, Clone, Deserialize)]
pub struct DtpDecision {
    /// The last 12 characters of the service `unique_id`.
    pub service_suffix: String,
    #[serde(default)]
    pub interop_referral_id: Option<String>,
    #[serde(flatten)]
    pub decision: InboundDecision,
    /// Codes the job passed raw because its tables do not list them.
    #[serde(default)]
    pub mapping_gaps: Vec<MappingGap>,
}

/// The inbox handler of `PrimeroIncomingReferralDecision` messages.
pub struct Handler {
    primero: PrimeroClient,
    catalog: Arc<Catalog>,
    /// Where the audit trail is kept.
    store: Arc<dyn bridge_store::Store>,
}

impl Handler {
    /// From the application's clients.
    pub fn new(app: &App) -> Self {
        Self::from_parts(app.primero.clone(), app.catalog.clone(), app.store.clone())
    }

    pub fn from_parts(
        primero: PrimeroClient,
        catalog: Arc<Catalog>,
        store: Arc<dyn bridge_store::Store>,
    ) -> Self {
        Self {
            primero,
            catalog,
            store,
        }
    }

    async fn handle_inner(
        &self,
        receipt_id: &str,
        body: &Value,
        today: &str,
        claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError> {
        let Some(items) = body.get("interventions").and_then(Value::as_array) else {
            return Err(HandlerError::Permanent(
                "message has no `interventions` list".into(),
            ));
        };
        // A job or mapping problem keeps the message: an operator fixes it
        // (hot reload) and it is processed again.
        let mut instance = match self.catalog.flow_instance(FLOW).await {
            Ok(i) => i,
            Err(e) => return Err(HandlerError::Retryable(e.to_string())),
        };
        let ctx = JobContext {
            flow: FLOW.into(),
            run_id: receipt_id.into(),
            today: today.into(),
            dry_run: false,
        };
        let audit = AuditContext::new(FLOW, receipt_id, &instance, false);
        let mut report = RunReport {
            flow: FLOW.into(),
            run_id: receipt_id.into(),
            fetched: items.len(),
            ..RunReport::default()
        };
        for (index, item) in items.iter().enumerate() {
            claim.check()?;
            let interop_id = item
                .get("progres_interoperabilityreferralid")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string);
            let source_id =
                interop_id.unwrap_or_else(|| format!("(item {index} without a referral id)"));
            let span = tracing::info_span!("record", record = %source_id, index);
            let (outcome, gaps) = self
                .one(&mut instance, &ctx, &source_id, item)
                .instrument(span.clone())
                .await;
            tracing::info!(parent: &span, outcome = outcome.label(), index, "decision handled");
            // proGres sends no consent with a decision; its reviewer, where named.
            let share = Share::new(None, progres_user(item), ConsentBasis::NotTransmitted);
            audit
                .record(self.store.as_ref(), &source_id, &outcome, &share)
                .await;
            for gap in gaps {
                let note = gap.note();
                if let super::report::Note::MappingGap { table, code } = &note {
                    tracing::warn!(parent: &span, table = %table, code = %code, "mapping gap: the raw code was sent");
                }
                report.notes.push(RecordNote::new(source_id.clone(), note));
            }
            let acknowledged = outcome.is_delivered();
            report.push(RecordReport {
                source_id,
                outcome,
                acknowledged,
                ack_error: None,
                would_acknowledge: None,
            });
        }
        let transient: Vec<String> = report
            .records
            .iter()
            .filter(|r| is_transient(&r.outcome))
            .map(|r| match &r.outcome {
                RecordOutcome::Failed { reason, .. } => format!("{}: {reason}", r.source_id),
                _ => r.source_id.clone(),
            })
            .collect();
        if !transient.is_empty() {
            return Err(HandlerError::Retryable(transient.join("; ")));
        }
        Ok(report)
    }

    async fn one(
        &self,
        instance: &mut JobInstance,
        ctx: &JobContext,
        source_id: &str,
        item: &Value,
    ) -> (RecordOutcome, Vec<MappingGap>) {
        let json = match serde_json::to_string(item) {
            Ok(j) => j,
            Err(e) => return (failed("internal", e.to_string()), Vec::new()),
        };
        let decision = match instance.run(ctx, source_id, &json).await {
            Ok(JobOutcome::Emit(value)) => match serde_json::from_value::<DtpDecision>(value) {
                Ok(d) => d,
                Err(e) => {
                    let why = format!("job {FLOW} emitted an unexpected shape: {e}");
                    return (failed("job-invalid-output", why), Vec::new());
                }
            },
            Ok(JobOutcome::Skip(reason)) => return (RecordOutcome::Skipped { reason }, Vec::new()),
            Err(e) => return (failed(e.code(), e.to_string()), Vec::new()),
        };
        let outcome = apply_decision(
            &self.primero,
            &decision.decision,
            ServiceMatch::Suffix(&decision.service_suffix),
            Apply::Write,
            &super::sharing_check::SharingCheck::for_instance(FLOW, instance),
        )
        .await;
        (outcome, decision.mapping_gaps)
    }
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
        if kind != InboxKind::PrimeroIncomingReferralDecision {
            return Err(HandlerError::wrong_kind(
                FLOW,
                InboxKind::PrimeroIncomingReferralDecision,
                kind,
            ));
        }
        let span = tracing::info_span!("message", flow = FLOW, receipt = receipt_id);
        self.handle_inner(receipt_id, body, today, claim)
            .instrument(span)
            .await
    }
}

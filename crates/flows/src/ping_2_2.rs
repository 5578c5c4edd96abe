//! PING workflow 2.2: proGres decisions on Primero referrals → Primero.
//!
//! interoperability referrals (SHP-2795, every page) → those whose status is a
//! decision (the codes of mapping table `inbound-decision-status`) → details
//! per referral (SHP-2796) → job `ping-2.2` → the Primero
//! referral of the service ([`super::referral_decision`]) → "synced" status
//! (SHP-2284) for each referral Primero now holds (spec §1.B "Workflow 2.2",
//! example 20).
//!
//! Better than the original (spec README): an unknown status code fails that
//! referral instead of becoming an acceptance; the referral is matched on the
//! exact service id; a decision Primero refuses (already decided otherwise)
//! is held, not reported to proGres as synced; each referral is acknowledged
//! on its own. Whatever is not synced keeps its status in proGres, so
//! SHP-2795 lists it again next run (the queue is proGres'; no cursor).

use futures::future::BoxFuture;

use crate::app::App;
use crate::registry::{Design, FlowRun, FlowSpec, Intake, Partner};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::audit_trail::{progres_user, AuditContext, Share};
use bridge_store::ConsentBasis;
use super::referral_decision::{apply_decision, Apply, InboundDecision, ServiceMatch};
use super::report::{failed, RecordOutcome, RecordReport, RunReport};
use super::rows::Row;
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::ping::{IngestionRecord, PingClient};
use bridge_partners::primero::PrimeroClient;
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobInstance, JobOutcome};

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "ping-2.2";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "proGres decision on a Primero referral → Primero (PING workflow 2.2)",
    design: Design::Ping,
    intake: Intake::Pull(run),
    partners: &[Partner::Ping, Partner::Primero],
};

fn run<'a>(app: &'a App, run: FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>> {
    Box::pin(async move {
        let ping = app.ping_for(FLOW)?;
        Ok(Ping22 {
            ping,
            primero: &app.primero,
            catalog: &app.catalog,
            ledger: run.ledger,
            store: run.store,
            stop: run.stop,
            dry_run: app.dry_run,
        }
        .run(run.run_id, run.today)
        .await)
    })
}
/// proGres status codes → Primero referral status; its keys select the
/// SHP-2795 rows that carry a decision.
pub const STATUS_TABLE: &str = "inbound-decision-status";

const ID: &str = "progres_interoperabilityreferralid";
const STATUS: &str = "progres_interoperabilityreferralstatus";

/// What the job emits for one interoperability referral.
#[derive(Debug, Clone, Deserialize)]
pub struct ProgresDecision {
    pub interop_referral_id: String,
    /// The full service `unique_id` (`progres_orgreferralid`).
    pub service_id: String,
    #[serde(flatten)]
    pub decision: InboundDecision,
    /// The SHP-2284 record, sent once Primero holds the decision.
    pub synced: IngestionRecord,
}

/// The clients and versions one run works with.
pub struct Ping22<'a> {
    pub ping: &'a PingClient,
    pub primero: &'a PrimeroClient,
    pub catalog: &'a Catalog,
    pub ledger: &'a crate::ledger::Ledger<'a>,
    /// Where the audit trail is kept.
    pub store: &'a dyn bridge_store::Store,
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Map and report: no Primero write, no synced status.
    pub dry_run: bool,
}

/// The acknowledgement a dry run reports instead of writing it.
pub const ACK_SYNCED: &str = "synced-status";

/// A row value as text (option-set codes arrive as numbers or strings).
fn code(row: &Row, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The referral ids of the list rows whose status is one of `decided`, once
/// each, in list order.
pub fn decided_ids(rows: &[Row], decided: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for row in rows {
        let is_decision = code(row, STATUS).is_some_and(|s| decided.contains(&s.as_str()));
        if let (true, Some(id)) = (is_decision, code(row, ID)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

impl Ping22<'_> {
    /// Run the workflow once. Never panics on partner or record errors: they
    /// end up in the report.
    pub async fn run(&self, run_id: &str, today: &str) -> RunReport {
        let span = tracing::info_span!("run", flow = FLOW, run = run_id);
        self.run_inner(run_id, today).instrument(span).await
    }

    async fn run_inner(&self, run_id: &str, today: &str) -> RunReport {
        let mut report = RunReport {
            flow: FLOW.into(),
            run_id: run_id.into(),
            dry_run: self.dry_run,
            ..RunReport::default()
        };
        let mappings = self.catalog.mappings();
        let sp = &mappings.shipping_processes;
        let (Some(list_sp), Some(details_sp), Some(synced_sp)) = (
            sp.decision_list.as_deref(),
            sp.decision_details.as_deref(),
            sp.decision_synced.as_deref(),
        ) else {
            report.aborted = Some(format!(
                "{}/deployment.toml [shipping_processes] needs decision_list, decision_details and decision_synced",
                mappings.dir.display()
            ));
            return report;
        };
        let Some(table) = mappings.tables.get(STATUS_TABLE) else {
            report.aborted = Some(format!(
                "{}/{STATUS_TABLE}.toml: missing (needed by flow {FLOW})",
                mappings.dir.display()
            ));
            return report;
        };
        let decided: Vec<&str> = table.map.keys().map(String::as_str).collect();
        // One job version and one mapping version for the whole run.
        let mut instance = match self.catalog.flow_instance(FLOW).await {
            Ok(i) => i,
            Err(e) => {
                report.aborted = Some(e.to_string());
                return report;
            }
        };
        // "No Data Available" comes back as no rows.
        let rows = match self.ping.retrieve(list_sp, &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                report.aborted = Some(e.to_string());
                return report;
            }
        };
        let ids = decided_ids(&rows, &decided);
        report.fetched = ids.len();
        tracing::info!(
            listed = rows.len(),
            decided = ids.len(),
            "proGres decisions"
        );
        let audit = AuditContext::new(FLOW, run_id, &instance, self.dry_run);
        let ctx = JobContext {
            flow: FLOW.into(),
            run_id: run_id.into(),
            today: today.into(),
            dry_run: self.dry_run,
        };
        for id in &ids {
            if self.stop.is_cancelled() {
                // Not started: stays unsynced in proGres for the next run.
                report.stopped = true;
                break;
            }
            if let Some(parked) = self.ledger.parked(id) {
                report.records.push(RecordReport {
                    source_id: id.clone(),
                    outcome: parked,
                    acknowledged: false,
                    ack_error: None,
                    would_acknowledge: None,
                });
                continue;
            }
            let span = tracing::info_span!("record", record = %id);
            let record = self
                .one(&mut instance, (&ctx, &audit), id, details_sp, synced_sp)
                .instrument(span)
                .await;
            report.records.push(record);
        }
        tracing::info!(
            updated = report.count("updated"),
            already_present = report.count("already present"),
            held = report.count("held"),
            failed = report.count("failed"),
            synced = report.acknowledged(),
            "run finished"
        );
        report
    }

    async fn one(
        &self,
        instance: &mut JobInstance,
        (ctx, audit): (&JobContext, &AuditContext),
        id: &str,
        details_sp: &str,
        synced_sp: &str,
    ) -> RecordReport {
        // proGres sends no consent with a decision; its reviewer, where named.
        let mut share = Share::new(None, None, ConsentBasis::NotTransmitted);
        let (outcome, synced) = self.apply(instance, ctx, id, details_sp, &mut share).await;
        let outcome = self.ledger.settle(id, outcome, None).await;
        audit.record(self.store, id, &outcome, &share).await;
        let mut record = RecordReport {
            source_id: id.to_string(),
            outcome,
            acknowledged: false,
            ack_error: None,
            would_acknowledge: None,
        };
        match (&record.outcome, synced) {
            (o, Some(_)) if self.dry_run => {
                if o.is_delivered() || matches!(o, RecordOutcome::WouldWrite { .. }) {
                    record.would_acknowledge = Some(ACK_SYNCED.into());
                }
            }
            (o, Some(synced)) if o.is_delivered() => {
                match self.ping.ingest(synced_sp, &[synced]).await {
                    Ok(resp) if resp.failures().is_empty() => record.acknowledged = true,
                    Ok(resp) => {
                        record.ack_error = Some(format!(
                            "PING refused the synced status ({}; transaction {})",
                            resp.failures()
                                .iter()
                                .filter_map(|f| f.status.as_deref())
                                .collect::<Vec<_>>()
                                .join(", "),
                            resp.sph_transaction_id.as_deref().unwrap_or("none")
                        ))
                    }
                    Err(e) => record.ack_error = Some(e.to_string()),
                }
                tracing::info!(
                    outcome = o.label(),
                    synced = record.acknowledged,
                    "decision in Primero"
                );
            }
            (o, _) => tracing::info!(
                outcome = o.label(),
                "decision not in Primero; stays unsynced in proGres"
            ),
        }
        record
    }

    /// Fetch, map and write one decision; the SHP-2284 record to send when
    /// Primero holds it.
    async fn apply(
        &self,
        instance: &mut JobInstance,
        ctx: &JobContext,
        id: &str,
        details_sp: &str,
        share: &mut Share,
    ) -> (RecordOutcome, Option<IngestionRecord>) {
        let rows = match self
            .ping
            .retrieve(details_sp, &[("{record_ids}", id)])
            .await
        {
            Ok(rows) => rows,
            Err(e) => return (super::referral_decision::partner_failure(&e), None),
        };
        let Some(row) = rows
            .iter()
            .find(|r| code(r, ID).as_deref() == Some(id))
            .or(rows.first())
        else {
            return (
                failed("not-found", format!("{details_sp} returned no details")),
                None,
            );
        };
        share.permitted_by = progres_user(&serde_json::to_value(row).unwrap_or_default());
        let json = match serde_json::to_string(row) {
            Ok(j) => j,
            Err(e) => return (failed("internal", e.to_string()), None),
        };
        let decision = match instance.run(ctx, id, &json).await {
            Ok(JobOutcome::Emit(value)) => match serde_json::from_value::<ProgresDecision>(value) {
                Ok(d) if d.interop_referral_id == id => d,
                Ok(_) => {
                    return (
                        failed(
                            "job-invalid-output",
                            format!("job {FLOW} emitted another referral's decision"),
                        ),
                        None,
                    )
                }
                Err(e) => {
                    return (
                        failed(
                            "job-invalid-output",
                            format!("job {FLOW} emitted an unexpected shape: {e}"),
                        ),
                        None,
                    )
                }
            },
            Ok(JobOutcome::Skip(reason)) => return (RecordOutcome::Skipped { reason }, None),
            Err(e) => return (failed(e.code(), e.to_string()), None),
        };
        // The synced record is sent after the Primero write: checked before either.
        let sharing = SharingCheck::for_instance(FLOW, instance);
        if let Err(refused) = sharing.check(Destination::PingDecisionSynced, &decision.synced) {
            return (refused, None);
        }
        let outcome = apply_decision(
            self.primero,
            &decision.decision,
            ServiceMatch::Exact(&decision.service_id),
            if self.dry_run {
                Apply::DryRun
            } else {
                Apply::Write
            },
            &sharing,
        )
        .await;
        (outcome, Some(decision.synced))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn example_20_list_selects_the_rejected_one_only() {
        let text = include_str!(
            "../../../tests/fixtures/examples/20_ping_decisions_SHP-2795_2796_and_synced_SHP-2284.json"
        );
        let example: Value = serde_json::from_str(text).unwrap();
        let rows: Vec<Row> = example["list_response"]["Data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect();
        assert_eq!(
            decided_ids(&rows, &["125080001", "125080002"]),
            vec!["0b7f1c2e-9999-4a4a-9c9c-000000000009".to_string()]
        );
    }

    #[test]
    fn codes_as_strings_count_and_ids_come_once() {
        let rows: Vec<Row> = [
            json!({ID: "a", STATUS: "125080001"}),
            json!({ID: "a", STATUS: 125080001}),
            json!({ID: "b", STATUS: 125080000}),
            json!({STATUS: 125080002}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        assert_eq!(decided_ids(&rows, &["125080001", "125080002"]), vec!["a"]);
    }
}

//! PING workflow 1.1: proGres referral → Primero.
//!
//! pending deliveries (SHP-2747) → intervention details per delivery (SHP-2358,
//! join rows de-duplicated) → job `ping-1.1` → upsert by
//! `unhcr_individual_no` (shared with DTP 1-1: [`super::case_upsert`]) →
//! transfer status (SHP-2748) for each intervention Primero now holds.
//!
//! The pending list is worked on one page at a time (only the columns the
//! flow and its job read are kept), so memory does not grow with the queue;
//! the transfer statuses are written once the listing has been read.
//!
//! Better than the original (spec README): a bad intervention fails alone and
//! the others proceed; a service already present (exact intervention number)
//! is not appended again; several matching cases hold the record
//! (`ambiguous-match`) instead of writing to the first; the acknowledgement's
//! `ExternalId` is the intervention id, not a constant; undelivered records
//! stay pending in proGres and come back next run.

use futures::future::BoxFuture;

use crate::app::App;
use crate::registry::{Design, FlowRun, FlowSpec, Intake, Partner};
use serde_json::Value;
use tracing::Instrument;

use super::audit_trail::{progres_user, AuditContext, Share};
use super::consent::ConsentGate as _;
use super::case_upsert::{plan_case, upsert_case, ClosedCase, IndividualLocks, UpsertError};
pub use super::case_upsert::{same_intervention, CaseReferral};
use super::ledger::Ledger;
use super::report::{failed, partner_failure, RecordOutcome, RecordReport, RunReport};
use super::rows::{bundle_for_delivery, Row};
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::ping::{Field, IngestionRecord, PingClient};
use bridge_partners::primero::PrimeroClient;
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobOutcome, JobPool};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "ping-1.1";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "proGres referral → Primero case (PING workflow 1.1)",
    design: Design::Ping,
    intake: Intake::Pull(run),
    partners: &[Partner::Ping, Partner::Primero],
};

fn run<'a>(app: &'a App, run: FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>> {
    Box::pin(async move {
        let ping = app.ping_for(FLOW)?;
        Ok(Ping11 {
            ping,
            primero: &app.primero,
            catalog: &app.catalog,
            ledger: run.ledger,
            store: run.store,
            stop: run.stop,
            concurrency: app.record_concurrency,
            dry_run: app.dry_run,
        }
        .run(run.run_id, run.today)
        .await)
    })
}

/// proGres `progres_primerotransferstatus` "Pending" (acknowledgement by Primero pending).
pub const TRANSFER_STATUS_PENDING: &str = "125080002";

/// The clients and versions one run works with.
pub struct Ping11<'a> {
    pub ping: &'a PingClient,
    pub primero: &'a PrimeroClient,
    pub catalog: &'a Catalog,
    pub ledger: &'a Ledger<'a>,
    /// Where the audit trail is kept.
    pub store: &'a dyn bridge_store::Store,
    pub stop: &'a CancellationToken,
    /// Interventions worked on at once (partner calls are further bounded
    /// per partner by the clients).
    pub concurrency: usize,
    /// Map and report: no Primero write, no transfer status.
    pub dry_run: bool,
}

/// The acknowledgement a dry run reports instead of writing it.
pub const ACK_TRANSFER_STATUS: &str = "transfer-status";

/// The SHP-2747 columns this flow and its job read (the job takes the
/// intervention id, business unit and Primero id from the delivery row). The
/// rest of a pending row (names, dates) is skipped while the page is parsed,
/// so a page of thousands of rows stays small.
pub const DELIVERY_COLUMNS: &[&str] = &[
    "progres_lpinterventionid",
    "progres_intervention",
    "progres_interventionname",
    "progres_businessunit",
    "progres_primeroid",
];

/// A delivered record waiting for its transfer status: its place in the
/// report and what the status write needs.
struct Ack {
    index: usize,
    id: String,
    business_unit: String,
}

/// What the records of one run share.
struct RunShared<'a> {
    /// The run's job instances, one per core by default, each on a thread
    /// of its own; records that reach the job while every instance is busy
    /// are mapped together in one call.
    instance: JobPool,
    locks: IndividualLocks,
    /// What this run may send (the run's mapping version).
    sharing: SharingCheck,
    /// The country's consent rules and the audit of each share.
    consent: bridge_mappings::ConsentPolicy,
    audit: AuditContext,
    details_sp: &'a str,
    status_sp: &'a str,
    today: &'a str,
}

/// The SHP-2748 record telling proGres that Primero holds the intervention.
fn transfer_status(id: &str, business_unit: &str, today: &str) -> IngestionRecord {
    IngestionRecord {
        external_id: id.to_string(),
        attachments: None,
        fields: vec![
            Field::new("progres_lpinterventionid", id),
            Field::new("progres_businessunit", business_unit),
            Field::new("progres_primerotransferstatus", TRANSFER_STATUS_PENDING),
            Field::new("progres_primerotransferstatusdate", today),
        ],
    }
}

fn text(row: &Row, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The intervention a pending delivery names: `progres_lpinterventionid`,
/// else `progres_intervention` (the only one in the SHP-2747 rows of
/// OpenFn/ping-primero's sample). The job reads the same keys.
pub fn intervention_id(delivery: &Row) -> Option<String> {
    text(delivery, "progres_lpinterventionid").or_else(|| text(delivery, "progres_intervention"))
}

impl Ping11<'_> {
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
        let (Some(pending_sp), Some(details_sp), Some(status_sp)) = (
            sp.pending_referrals.as_deref(),
            sp.intervention_details.as_deref(),
            sp.transfer_status.as_deref(),
        ) else {
            report.aborted = Some(format!(
                "{}/deployment.toml [shipping_processes] needs pending_referrals, intervention_details and transfer_status",
                mappings.dir.display()
            ));
            return report;
        };
        // One job version and one mapping version for the whole run.
        let instance = match self.catalog.flow_instance(FLOW).await {
            Ok(i) => i,
            Err(e) => {
                report.aborted = Some(e.to_string());
                return report;
            }
        };
        let ctx = JobContext {
            flow: FLOW.into(),
            run_id: run_id.into(),
            today: today.into(),
            dry_run: self.dry_run,
        };
        let shared = RunShared {
            sharing: SharingCheck::for_instance(FLOW, &instance),
            consent: instance.consent_policy(),
            audit: AuditContext::new(FLOW, run_id, &instance, self.dry_run),
            instance: JobPool::start(instance, ctx, self.concurrency),
            locks: IndividualLocks::default(),
            details_sp,
            status_sp,
            today,
        };
        // One page of the pending list at a time, dropped once its records are
        // done. The transfer statuses wait until the listing is read: writing
        // one takes the intervention out of the SHP-2747 queue, which could
        // shift the rows of the pages not read yet (a crash before they are
        // sent is safe: the next run finds the service already present and
        // acknowledges it then).
        let mut pager = self
            .ping
            .pages(pending_sp, &[])
            .only_columns(DELIVERY_COLUMNS);
        let mut acks: Vec<Ack> = Vec::new();
        let mut pages = 0usize;
        loop {
            if self.stop.is_cancelled() && !pager.finished() {
                // Not started: stays pending in proGres for the next run.
                report.stopped = true;
                break;
            }
            let page = match pager.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
                    // The pages already worked on still count (and are acknowledged).
                    report.aborted = Some(e.to_string());
                    break;
                }
            };
            pages += 1;
            report.fetched += page.len();
            tracing::info!(
                page = pages,
                pending = page.len(),
                "page of pending proGres referrals"
            );
            self.work_page(&shared, &page, &mut report, &mut acks).await;
        }
        self.acknowledge(&shared, acks, &mut report).await;
        tracing::info!(
            pending = report.fetched,
            created = report.count("created"),
            updated = report.count("updated"),
            already_present = report.count("already present"),
            held = report.count("held"),
            failed = report.count("failed"),
            acknowledged = report.acknowledged(),
            "run finished"
        );
        report
    }

    /// Deliver one page's records, concurrently, results kept in list order;
    /// the delivered ones are queued for their transfer status.
    async fn work_page(
        &self,
        shared: &RunShared<'_>,
        deliveries: &[Row],
        report: &mut RunReport,
        acks: &mut Vec<Ack>,
    ) {
        // By index: a closure over `&Row` items trips the compiler's
        // higher-ranked lifetime check once the future must be `Send`.
        let records: Vec<Option<(RecordReport, Option<Ack>)>> = stream::iter(0..deliveries.len())
            .map(|i| async move {
                let delivery = &deliveries[i];
                if self.stop.is_cancelled() {
                    // Not started: stays pending in proGres for the next run.
                    return None;
                }
                let id = intervention_id(delivery).unwrap_or_default();
                if let Some(parked) = self.ledger.parked(&id) {
                    let record = RecordReport {
                        source_id: id,
                        outcome: parked,
                        acknowledged: false,
                        ack_error: None,
                        would_acknowledge: None,
                    };
                    return Some((record, None));
                }
                let span = tracing::info_span!("record", record = %id);
                Some(self.one(shared, delivery, &id).instrument(span).await)
            })
            .buffered(self.concurrency.max(1))
            .collect()
            .await;
        for record in records {
            match record {
                None => report.stopped = true,
                Some((record, ack)) => {
                    if let Some(mut ack) = ack {
                        ack.index = report.records.len();
                        acks.push(ack);
                    }
                    report.records.push(record);
                }
            }
        }
    }

    /// Write the transfer status (SHP-2748) of every delivered record.
    async fn acknowledge(&self, shared: &RunShared<'_>, acks: Vec<Ack>, report: &mut RunReport) {
        if acks.is_empty() {
            return;
        }
        if self.dry_run {
            for ack in acks {
                report.records[ack.index].would_acknowledge = Some(ACK_TRANSFER_STATUS.into());
            }
            return;
        }
        tracing::info!(records = acks.len(), "writing transfer statuses");
        let results: Vec<(usize, Result<(), String>)> = stream::iter(acks)
            .map(|ack| async move {
                let span = tracing::info_span!("ack", record = %ack.id);
                let result = self.ack(shared, &ack).instrument(span).await;
                (ack.index, result)
            })
            .buffered(self.concurrency.max(1))
            .collect()
            .await;
        for (index, result) in results {
            let record = &mut report.records[index];
            match result {
                Ok(()) => record.acknowledged = true,
                Err(e) => record.ack_error = Some(e),
            }
        }
    }

    /// Tell proGres that Primero holds the intervention.
    async fn ack(&self, shared: &RunShared<'_>, ack: &Ack) -> Result<(), String> {
        let record = transfer_status(&ack.id, &ack.business_unit, shared.today);
        let result = match self.ping.ingest(shared.status_sp, &[record]).await {
            Ok(resp) if resp.failures().is_empty() => Ok(()),
            Ok(resp) => Err(format!(
                "PING refused the transfer status: {}",
                resp.failures()
                    .iter()
                    .filter_map(|f| f.status.as_deref())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => Err(e.to_string()),
        };
        tracing::info!(acknowledged = result.is_ok(), "transfer status written");
        result
    }

    async fn one(
        &self,
        shared: &RunShared<'_>,
        delivery: &Row,
        id: &str,
    ) -> (RecordReport, Option<Ack>) {
        let (outcome, share) = self.deliver(shared, delivery, id).await;
        let outcome = self.ledger.settle(id, outcome, None).await;
        shared.audit.record(self.store, id, &outcome, &share).await;
        if outcome.is_delivered() {
            tracing::info!(outcome = outcome.label(), "record delivered");
        } else {
            tracing::info!(
                outcome = outcome.label(),
                "record not delivered; stays pending in proGres"
            );
        }
        // A dry run reports the transfer status a real run would write.
        let would = matches!(outcome, RecordOutcome::WouldWrite { .. });
        let ack = (outcome.is_delivered() || would).then(|| Ack {
            index: 0,
            id: id.to_string(),
            business_unit: text(delivery, "progres_businessunit").unwrap_or_default(),
        });
        let record = RecordReport {
            source_id: if id.is_empty() {
                "(no intervention id)".into()
            } else {
                id.into()
            },
            outcome,
            acknowledged: false,
            ack_error: None,
            would_acknowledge: None,
        };
        (record, ack)
    }

    /// Fetch, map and write one intervention.
    async fn deliver(
        &self,
        shared: &RunShared<'_>,
        delivery: &Row,
        id: &str,
    ) -> (RecordOutcome, Share) {
        let mut share = Share::default();
        let outcome = self.deliver_one(shared, delivery, id, &mut share).await;
        if let Some(case_id) = outcome.target_id() {
            share.case_id = Some(case_id.to_string());
        }
        (outcome, share)
    }

    async fn deliver_one(
        &self,
        shared: &RunShared<'_>,
        delivery: &Row,
        id: &str,
        share: &mut Share,
    ) -> RecordOutcome {
        let details_sp = shared.details_sp;
        if id.is_empty() {
            return failed(
                "bad-input",
                "pending delivery has no progres_lpinterventionid",
            );
        }
        let rows = match self
            .ping
            .retrieve(details_sp, &[("{record_ids}", id)])
            .await
        {
            Ok(rows) => rows,
            Err(e) => return partner_failure(&e),
        };
        let Some(bundle) = bundle_for_delivery(delivery, &rows) else {
            return failed(
                "not-found",
                format!("{details_sp} returned no intervention details"),
            );
        };
        let bundle_value = match serde_json::to_value(&bundle) {
            Ok(v) => v,
            Err(e) => return failed("internal", e.to_string()),
        };
        let bundle_json = bundle_value.to_string();
        // proGres names no consent today; a country whose proGres does says where.
        let (basis, given) = shared.consent.inbound(&bundle_value);
        share.consent = Some(basis);
        share.permitted_by = progres_user(&bundle_value);
        let result = shared.instance.run(id, bundle_json).await;
        let mut referral = match result {
            Ok(JobOutcome::Emit(value)) => match serde_json::from_value::<CaseReferral>(value) {
                Ok(r) => r,
                Err(e) => {
                    return failed(
                        "job-invalid-output",
                        format!("job {FLOW} emitted an unexpected shape: {e}"),
                    )
                }
            },
            Ok(JobOutcome::Skip(reason)) => return RecordOutcome::Skipped { reason },
            Err(e) => return failed(e.code(), e.to_string()),
        };
        shared.consent.apply_inbound(&mut referral.case, given);
        // The transfer status written after it is checked before anything is written.
        let business_unit = text(delivery, "progres_businessunit").unwrap_or_default();
        let status = transfer_status(id, &business_unit, shared.today);
        if let Err(refused) = shared.sharing.check(Destination::PingTransferStatus, &status) {
            return refused;
        }
        let _one_at_a_time = shared.locks.lock(&referral.unhcr_individual_no).await;
        self.upsert(&referral, &shared.sharing).await
    }

    /// Create the case, append the service, or recognise it is already there.
    async fn upsert(&self, referral: &CaseReferral, sharing: &SharingCheck) -> RecordOutcome {
        let result = if self.dry_run {
            plan_case(self.primero, referral, sharing).await
        } else {
            upsert_case(self.primero, referral, ClosedCase::Append, sharing)
                .await
                .map(|done| done.outcome())
        };
        match result {
            Ok(outcome) => outcome,
            Err(UpsertError::NoService) => failed(
                "job-invalid-output",
                format!("job {FLOW} emitted a case without a service"),
            ),
            Err(UpsertError::Partner(e)) => partner_failure(&e),
            Err(UpsertError::Refused(outcome)) => outcome,
            Err(e @ UpsertError::NotApplied { .. }) => {
                failed(super::case_upsert::NOT_APPLIED, e.to_string())
            }
            Err(UpsertError::Lookup(e)) => e.outcome(),
            Err(e @ UpsertError::Incomplete { .. }) => {
                failed(super::case_upsert::WRITE_INCOMPLETE, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_s_pending_rows_name_their_intervention() {
        let text = include_str!(
            "../../../tests/fixtures/samples/ping-1-1_SHP-2747_rows-without-lpinterventionid.json"
        );
        let sample: Value = serde_json::from_str(text).unwrap();
        for row in sample["Data"].as_array().unwrap() {
            let row = row.as_object().unwrap();
            assert!(!row.contains_key("progres_lpinterventionid"));
            assert_eq!(
                intervention_id(row).as_deref(),
                row["progres_intervention"].as_str()
            );
        }
    }
}

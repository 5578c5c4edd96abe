//! PING workflow 1.1: proGres referral → Primero.
//!
//! pending deliveries (SHP-2747) → intervention details per delivery (SHP-2358,
//! join rows de-duplicated) → job `ping-1.1` → upsert by
//! `unhcr_individual_no` (shared with DTP 1-1: [`super::case_upsert`]) →
//! transfer status (SHP-2748) for each intervention Primero now holds.
//!
//! The pending list is read one page at a time as the records need it (only
//! the columns the flow and its job read are kept), so memory does not grow
//! with the queue and the records in flight do not drain between pages; the
//! transfer statuses are written once the listing has been read, up to
//! [`INGESTION_BATCH`] in one SHP-2748 ingestion (the original made one POST
//! per intervention), while the last records are still worked on; once every
//! listed record has started, whatever is ready goes as soon as no ingestion
//! is in flight, so the run ends one small ingestion after its last record.
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
use super::ping_batch::{ingest_acks, INGESTION_BATCH};
use super::report::{failed, partner_failure, RecordOutcome, RecordReport, RunReport, Slot};
use super::rows::{bundle_for_delivery, Row};
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::ping::{Field, IngestionRecord, PackedRows, PingClient, RetrievePager};
use bridge_partners::primero::PrimeroClient;
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobOutcome, JobPool};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use bridge_store::AuditEntry;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::SinkExt as _;
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
            records: run.records,
            ping,
            primero: &app.primero,
            catalog: &app.catalog,
            ledger: run.ledger,
            store: run.store,
            stop: run.stop,
            holding: run.holding,
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
    /// A recorded run's: where the report streams its records.
    pub records: Option<crate::record_stream::RecordStream>,
    pub ping: &'a PingClient,
    pub primero: &'a PrimeroClient,
    pub catalog: &'a Catalog,
    pub ledger: &'a Ledger<'a>,
    /// Where the audit trail is kept.
    pub store: &'a dyn bridge_store::Store,
    pub stop: &'a CancellationToken,
    /// Whether the flow's lease can still be counted on (checked before
    /// each Primero write).
    pub holding: &'a crate::lease::Holding,
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

/// A delivered record waiting for its transfer status: what the status
/// write needs.
struct Ack {
    id: String,
    business_unit: String,
}

/// A record done: its report, the transfer status it waits for, its audit
/// entry.
type Finished = (RecordReport, Option<Ack>, Option<AuditEntry>);

/// How many listing places a record may start after the oldest record not
/// reported yet, per record worked on at once. Records are reported in
/// listing order, so those that end behind a record that hangs (a partner
/// call waiting out its timeout and retries) wait in memory until it ends;
/// this bounds them (about a kilobyte each: 32 records at once hold at most
/// 1,024) at the cost of pausing behind a record that long overdue.
const AHEAD_PER_RECORD_AT_ONCE: usize = 32;

/// How far the pending list was read.
#[derive(Default)]
struct Listing {
    pages: usize,
    fetched: usize,
    /// Read to its end, failed, or stopped: the transfer statuses may go.
    ended: bool,
    stopped: bool,
    aborted: Option<String>,
}

/// Whether the listing ended, and how many rows it gave.
fn listing_read(listing: &std::sync::Mutex<Listing>) -> (bool, usize) {
    let l = listing.lock().unwrap_or_else(|e| e.into_inner());
    (l.ended, l.fetched)
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

impl<'p> Ping11<'p> {
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
        report.stream_to(self.records.clone());
        // The pending list is read a page at a time, as the records need it:
        // the next page is asked for once the last record of the page before
        // has started, so the records in flight do not drain between pages,
        // and a page's rows go with their records (memory does not grow with
        // the queue). The transfer statuses wait until the listing is read:
        // writing one takes the intervention out of the SHP-2747 queue, which
        // could shift the rows of the pages not read yet (a crash before they
        // are sent is safe: the next run finds the service already present
        // and acknowledges it then). From then on they go, up to
        // `INGESTION_BATCH` in one ingestion, while the last records are
        // still worked on.
        let listing = std::sync::Mutex::new(Listing::default());
        // Rows go through a channel as deep as the records worked on at
        // once: the next page is asked for while the last rows of the page
        // before are still waiting to start.
        let (mut rows_in, rows) = futures::channel::mpsc::channel::<Row>(self.concurrency.max(1));
        let listing_ref = &listing;
        let lister = async move {
            let mut pager = self
                .ping
                .pages(pending_sp, &[])
                .only_columns(DELIVERY_COLUMNS);
            // The first page with rows also logs in to Primero, while those
            // rows' details are read: otherwise the first records' searches
            // all wait for the login (a round trip, bench). A run with
            // nothing pending does not log in.
            let mut session_ready = false;
            while let Some(page) = self.next_page(&mut pager, listing_ref).await {
                let warm_up = !session_ready && !page.is_empty();
                session_ready |= warm_up;
                let send = async {
                    for row in page {
                        if rows_in.send(row).await.is_err() {
                            return false;
                        }
                    }
                    true
                };
                let (sent, ()) = tokio::join!(send, async {
                    if warm_up {
                        self.warm_up().await;
                    }
                });
                if !sent {
                    return;
                }
            }
        };
        let mut lister = std::pin::pin!(lister);
        let mut listed = false;
        let shared_ref = &shared;
        // Records started: once every listed one has, the run is in its tail.
        let started = AtomicUsize::new(0);
        let started_ref = &started;
        // Worked on unordered, so a slow record does not hold back the
        // start of the next (taken in order, the records at once fell to
        // ~28 of 32 behind the slowest of them: 6% of the rate, bench);
        // reported in listing order (`arrived` holds those that ended
        // before a record listed earlier), a record starting at most
        // `ahead` places after the oldest not reported yet.
        let (reported_tx, reported_rx) = tokio::sync::watch::channel(0usize);
        let ahead = self.concurrency.max(1) * AHEAD_PER_RECORD_AT_ONCE;
        let records = rows
            .enumerate()
            .map(move |(i, delivery)| {
                let mut reported = reported_rx.clone();
                async move {
                    // The sender lives as long as this stream's consumer.
                    let _ = reported.wait_for(|&oldest| i < oldest + ahead).await;
                    started_ref.fetch_add(1, Ordering::Relaxed);
                    (i, self.record(shared_ref, delivery).await)
                }
            })
            .buffer_unordered(self.concurrency.max(1));
        let mut records = std::pin::pin!(records);
        let mut arrived: BTreeMap<usize, Option<Finished>> = BTreeMap::new();
        let mut next_in_order = 0usize;
        let mut sending = FuturesUnordered::new();
        // Transfer statuses waiting: each with the number of audit entries
        // that must be written before it goes (its own among them).
        let mut queued: VecDeque<(Slot, Ack, usize)> = VecDeque::new();
        // Audit entries are appended a batch at a time, one batch in
        // flight, off the records' path.
        let mut entries: Vec<AuditEntry> = Vec::new();
        let mut auditing = FuturesUnordered::new();
        let (mut entries_made, mut entries_written) = (0usize, 0usize);
        loop {
            tokio::select! {
                () = &mut lister, if !listed => listed = true,
                next = records.next() => match next {
                    None => break,
                    Some((i, finished)) => {
                        arrived.insert(i, finished);
                        while let Some(finished) = arrived.remove(&next_in_order) {
                            next_in_order += 1;
                            // Not started: stays pending in proGres for the next run.
                            let Some((record, ack, entry)) = finished else {
                                report.stopped = true;
                                continue;
                            };
                            let slot = report.push(record);
                            if let Some(entry) = entry {
                                entries.push(entry);
                                entries_made += 1;
                            }
                            match ack {
                                Some(_) if self.dry_run => report.would_acknowledge(slot, ACK_TRANSFER_STATUS),
                                Some(ack) => queued.push_back((slot, ack, entries_made)),
                                None => {}
                            }
                        }
                        reported_tx.send_if_modified(|reported| {
                            std::mem::replace(reported, next_in_order) != next_in_order
                        });
                    }
                },
                Some(written) = auditing.next(), if !auditing.is_empty() => entries_written += written,
                Some(answers) = sending.next(), if !sending.is_empty() => {
                    for (slot, answer) in answers {
                        report.acknowledge(slot, answer);
                    }
                }
            }
            if auditing.is_empty() && !entries.is_empty() {
                auditing.push(shared.audit.append_counted(self.store, std::mem::take(&mut entries)));
            }
            let (listing_ended, fetched) = listing_read(&listing);
            if listing_ended {
                // In the tail no record joins a full batch any more: what
                // is ready goes whenever no ingestion is in flight, so the
                // run's last ingestion carries its last records only (not
                // the whole batch after the last record ends).
                let tail = sending.is_empty() && started.load(Ordering::Relaxed) >= fetched;
                for batch in Self::ready(&mut queued, entries_written, tail) {
                    sending.push(self.acknowledge(&shared, batch));
                }
            }
        }
        // The listing ended (read, failed or stopped): the audit entries
        // first, then every transfer status left, the pages already worked
        // on included.
        while let Some(written) = auditing.next().await {
            entries_written += written;
        }
        entries_written += shared.audit.append_counted(self.store, entries).await;
        for batch in Self::ready(&mut queued, entries_written.max(entries_made), true) {
            sending.push(self.acknowledge(&shared, batch));
        }
        while let Some(answers) = sending.next().await {
            for (slot, answer) in answers {
                report.acknowledge(slot, answer);
            }
        }
        let listing = std::mem::take(&mut *listing.lock().unwrap_or_else(|e| e.into_inner()));
        report.fetched = listing.fetched;
        report.stopped |= listing.stopped;
        if listing.aborted.is_some() {
            report.aborted = listing.aborted;
        }
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

    /// The transfer statuses whose audit entries are written, a full batch
    /// at a time (`all`: the rest too), to send.
    fn ready(
        queued: &mut VecDeque<(Slot, Ack, usize)>,
        entries_written: usize,
        all: bool,
    ) -> Vec<Vec<(Slot, Ack)>> {
        let mut batches = Vec::new();
        loop {
            let ready = queued
                .iter()
                .take_while(|(_, _, needs)| *needs <= entries_written)
                .count();
            if ready == 0 || (ready < INGESTION_BATCH && !all) {
                return batches;
            }
            let n = ready.min(INGESTION_BATCH);
            batches.push(queued.drain(..n).map(|(s, a, _)| (s, a)).collect());
        }
    }

    /// Primero's token, obtained ahead. Errors are left to the first
    /// search, which reports them.
    async fn warm_up(&self) {
        if let Err(e) = self.primero.authenticate().await {
            tracing::debug!(error = %e, "Primero token not obtained ahead; the first search asks again");
        }
    }

    /// The next page of the pending list, `None` once it ended (read to
    /// the end, failed, or the process is stopping).
    async fn next_page(
        &self,
        pager: &mut RetrievePager<'_>,
        listing: &std::sync::Mutex<Listing>,
    ) -> Option<PackedRows> {
        let lock = || listing.lock().unwrap_or_else(|e| e.into_inner());
        if pager.finished() {
            lock().ended = true;
            return None;
        }
        if self.stop.is_cancelled() {
            // Not read: stays pending in proGres for the next run.
            let mut l = lock();
            l.stopped = true;
            l.ended = true;
            return None;
        }
        // Read as it arrives and kept packed: a page of thousands of rows
        // costs a few hundred bytes a row until its records start.
        let page = pager.next_packed().await;
        let mut l = lock();
        match page {
            Ok(Some(page)) => {
                l.pages += 1;
                l.fetched += page.len();
                l.ended = pager.finished();
                tracing::info!(
                    page = l.pages,
                    pending = page.len(),
                    "page of pending proGres referrals"
                );
                Some(page)
            }
            Ok(None) => {
                l.ended = true;
                None
            }
            Err(e) => {
                // The pages already worked on still count (and are acknowledged).
                l.aborted = Some(e.to_string());
                l.ended = true;
                None
            }
        }
    }

    /// One pending delivery, start to end; `None` when the process is
    /// stopping and it was not started.
    async fn record(
        &self,
        shared: &RunShared<'_>,
        delivery: Row,
    ) -> Option<Finished> {
        if self.stop.is_cancelled() {
            return None;
        }
        let id = intervention_id(&delivery).unwrap_or_default();
        if let Some(parked) = self.ledger.parked(&id) {
            let record = RecordReport {
                source_id: id,
                outcome: parked,
                acknowledged: false,
                ack_error: None,
                would_acknowledge: None,
            };
            return Some((record, None, None));
        }
        let span = tracing::info_span!("record", record = %id);
        Some(self.one(shared, &delivery, &id).instrument(span).await)
    }

    /// Tell proGres that Primero holds these interventions: one SHP-2748
    /// ingestion; the answer of each.
    async fn acknowledge(
        &self,
        shared: &RunShared<'_>,
        acks: Vec<(Slot, Ack)>,
    ) -> Vec<(Slot, Result<(), String>)> {
        if self.holding.is_lost() {
            // Not written: the interventions stay pending in proGres, and the
            // holder of the flow finds their cases and acknowledges them.
            let why = "not written: this replica's lease of the flow can no longer be counted on";
            return acks
                .into_iter()
                .map(|(slot, _)| (slot, Err(why.to_string())))
                .collect();
        }
        let records: Vec<IngestionRecord> = acks
            .iter()
            .map(|(_, a)| transfer_status(&a.id, &a.business_unit, shared.today))
            .collect();
        let answers = ingest_acks(self.ping, shared.status_sp, &records, "transfer status")
            .instrument(tracing::info_span!("ack", records = records.len()))
            .await;
        for ((_, ack), answer) in acks.iter().zip(&answers) {
            match answer {
                Ok(()) => tracing::debug!(record = %ack.id, "transfer status written"),
                Err(e) => tracing::warn!(record = %ack.id, error = %e, "transfer status not written"),
            }
        }
        acks.into_iter().map(|(slot, _)| slot).zip(answers).collect()
    }

    async fn one(
        &self,
        shared: &RunShared<'_>,
        delivery: &Row,
        id: &str,
    ) -> Finished {
        let (outcome, share) = self.deliver(shared, delivery, id).await;
        let outcome = self.ledger.settle(id, outcome, None).await;
        // Appended by the run with the other records' (not waited for
        // here), before the record's transfer status is written.
        let entry = shared.audit.entry_to_append(id, &outcome, &share);
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
        (record, ack, entry)
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
            upsert_case(self.primero, referral, ClosedCase::Append, sharing, self.holding)
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
            // Stays pending in proGres: the replica holding the flow now
            // finds it there.
            Err(e @ UpsertError::NotHeld) => failed(super::case_upsert::NOT_HELD, e.to_string()),
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

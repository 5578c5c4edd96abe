//! Primero referrals → proGres, the part both designs share (PING workflow
//! 2.1, DTP flow 2-1/2-2): cases changed since the cursor → their referrals →
//! the case owners (each looked up by user name once per run, several at
//! once: those of a page's first cases while their referrals are read, the
//! others when a case has a referral since the cursor)
//! → the job, once per service (it decides which services are new UNHCR
//! referrals and builds the partner payload) → a design-specific
//! [`Deliver`]er.
//!
//! Better than the original (spec README):
//! - Every page is read, by keyset: page 1 of `last_updated_at >= <greatest
//!   seen>`, ascending, so cases edited during the run cannot shift a page
//!   and be skipped (page numbers are only followed through a run of cases
//!   sharing one timestamp).
//! - The cursor is the greatest `last_updated_at` read, held back to the
//!   referral date of the earliest referral not delivered, and committed
//!   after the run. It is inclusive: what sits on it is read again and
//!   recognised through the state store (keyed by service `unique_id`), so
//!   nothing is sent twice and nothing is skipped. Without a cursor (first
//!   run) there is no lower bound: every UNHCR referral not yet delivered goes.
//! - A referral that fails (unmapped value, partner error, refused by
//!   proGres) fails alone and is retried next run.
//! - When the caseworker's profile is incomplete the admin contact is still
//!   sent (business rule), and the run logs it (ids and field names only).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::audit_trail::{AuditContext, Share};
use super::case_scan::{case_span, CaseScan, CaseVisitor, ScanState};
use super::consent::{Basis, ConsentGate as _};
use super::consent_watch::ConsentWatch;
use super::ledger::Ledger;
pub use super::report::partner_failure;
use super::report::{failed, RecordOutcome, RecordReport, RunReport};
use super::sharing_check::SharingCheck;
use bridge_partners::primero::{
    Case, CaseOrderBy, CaseQuery, PrimeroClient, Referral, SortOrder, User,
};
use bridge_partners::retry::{may_retry, CallKind};
use bridge_partners::ConnectorError;
use bridge_runtime::reload::Catalog;
use bridge_runtime::{JobContext, JobFailure, JobOutcome, JobPool, MAX_RECORDS_PER_CALL};
use bridge_store::{Delivery, Store};
use futures::stream::{self, FuturesUnordered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Skip code of a service that is not a new UNHCR referral (jobs/lib/outbound-referral.js).
pub const NOT_REFERRED: &str = "not-referred";

/// Delivery state kept per service `unique_id` (the store's "fingerprint").
/// The content is deliberately not part of it: a service edited after its
/// referral is not sent again (spec §5.18).
pub const FP_DELIVERED: &str = "delivered";
/// Handed to the partner; its outcome is not known yet (PING async ingestion).
pub const FP_SUBMITTED: &str = "submitted";
/// About to be handed to the partner, recorded before it is: found by a
/// later run, the partner may hold it (the process stopped before its answer
/// was recorded), so it is not sent again without an operator.
pub const FP_SENDING: &str = "sending";
/// Not handed to the partner after all (it refused the request outright):
/// sent again on the next run.
pub const FP_NOT_SENT: &str = "not-sent";
/// The partner refused it; sent again on the next run.
pub const FP_REFUSED: &str = "refused";
/// The consent gate refused it; looked at again whenever its case changes
/// (issue 16), however old its referral.
pub const FP_NO_CONSENT: &str = "no-consent";

/// Whether a failed send may still have been applied by the partner: the
/// answer was lost after sending, or was a 2xx that could not be read.
pub fn maybe_applied(e: &ConnectorError) -> bool {
    match e {
        ConnectorError::Auth { .. } => false,
        ConnectorError::Protocol { .. } => true,
        ConnectorError::Status { status, .. } if *status < 500 => false,
        _ => !may_retry(e, CallKind::NonIdempotent),
    }
}

/// What a referral an earlier run left [`FP_SENDING`] becomes, unless an
/// operator replays it (they checked the partner): the partner may hold it,
/// so it is set aside (outcome-unknown, straight to the dead letter) rather
/// than sent a second time.
pub fn left_sending(
    previous: Option<&Delivery>,
    replaying: bool,
    partner: &str,
) -> Option<RecordOutcome> {
    (previous.is_some_and(|p| p.fingerprint == FP_SENDING) && !replaying).then(|| {
        failed(
            super::ledger::OUTCOME_UNKNOWN,
            format!(
                "handed to {partner} by an earlier run that stopped before the answer was \
                 recorded: check {partner} for this service before replaying"
            ),
        )
    })
}

/// What an outbound job emits for one service; `P` is the design's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct EmittedReferral<P> {
    pub service_id: String,
    #[serde(default)]
    pub referral_id: Option<String>,
    /// `created_at` of the Primero referral that made the service new.
    pub referred_at: DateTime<Utc>,
    /// Contact fields taken from the admin because the caseworker's profile lacks them.
    #[serde(default)]
    pub admin_contact: Vec<String>,
    #[serde(flatten)]
    pub payload: P,
}

/// The design-specific last step: hand one referral to proGres.
#[allow(async_fn_in_trait)]
pub trait Deliver {
    type Payload: DeserializeOwned;

    /// Deliver `item` (never delivered before; `previous` is what the store
    /// holds for it, e.g. a submitted transaction) and record the new state
    /// under `flow`/`item.service_id`. The body is checked against
    /// `sharing` right before it is sent.
    async fn deliver(
        &self,
        item: &EmittedReferral<Self::Payload>,
        previous: Option<&Delivery>,
        sharing: &SharingCheck,
    ) -> RecordOutcome;

    /// Write the states `deliver` left to the end of the page, in one
    /// transaction: only states a crash may lose, because what the store
    /// held before them makes the next run ask the partner again rather
    /// than send again (PING: confirmed after `submitted`). The error says
    /// why they are not written.
    async fn flush(&self) -> Result<(), String> {
        Ok(())
    }

    /// Ready the partner's session (a token) while the run lists its cases,
    /// so the first referral does not wait for it. Errors are left to the
    /// first delivery, which reports them.
    async fn warm_up(&self) {}

    /// Dry run: what `deliver` would write, as a
    /// [`RecordOutcome::WouldWrite`], without any call.
    fn planned(
        &self,
        item: &EmittedReferral<Self::Payload>,
        previous: Option<&Delivery>,
    ) -> RecordOutcome;
}

/// One run of an outbound referral flow.
pub struct OutboundRun<'a, D> {
    /// A recorded run's: where the report streams its records.
    pub records: Option<crate::record_stream::RecordStream>,
    /// The flow; the job serving it is the catalog's (`Catalog::job_for`).
    pub flow: &'static str,
    pub primero: &'a PrimeroClient,
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    /// Only cases associated with this user (design A: the UNHCR recipient).
    pub associated_user: Option<String>,
    pub deliver: D,
    pub ledger: &'a Ledger<'a>,
    pub stop: &'a CancellationToken,
    /// Whether the flow's lease can still be counted on: checked right
    /// before each referral goes to the partner (its delivery state was read
    /// at the page's start; a pause since may have let another replica send
    /// it).
    pub holding: &'a super::lease::Holding,
    /// Cases worked on at once, each from the read of its referrals to
    /// their delivery (the client bounds each partner's calls further).
    pub concurrency: usize,
    /// Where the first run reads from when no cursor is stored.
    pub initial_cursor: Option<DateTime<Utc>>,
    /// Map and report, deliver nothing, keep the cursor.
    pub dry_run: bool,
}

/// A referral mapped and ready to hand to the partner.
struct Pending<P> {
    service_id: String,
    /// The case it belongs to, and on what consent it goes (for the audit
    /// and the consent watch).
    case_id: String,
    basis: Basis,
    /// Who permitted the share: the referral's `transitioned_by`, else the case owner.
    permitted_by: Option<String>,
    item: EmittedReferral<P>,
    previous: Option<Delivery>,
    needs: Option<DateTime<Utc>>,
}

/// The record bundle handed to the job (jobs/lib/outbound-referral.js).
#[derive(Serialize)]
struct Bundle<'a> {
    case: &'a Case,
    service_id: &'a str,
    referrals: &'a [Referral],
    since: Option<String>,
    owner: Option<&'a User>,
}

/// RFC 3339 UTC with milliseconds, as cursors are stored.
/// A flow's committed cursor, parsed. The error says what is wrong, for the
/// run report.
pub async fn read_cursor(store: &dyn Store, flow: &str) -> Result<Option<DateTime<Utc>>, String> {
    match store.cursor(flow).await {
        Ok(None) => Ok(None),
        Ok(Some(raw)) => DateTime::parse_from_rfc3339(&raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| format!("state database: cursor of {flow} is not an RFC 3339 date-time")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn format_cursor(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where the next run may start.
///
/// Inclusive: the next run reads `last_updated_at >= cursor` and keeps
/// referrals created at or after it. Held back to the earliest date a failed
/// referral needs, so the next run selects it again; never moves backwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CursorTracker {
    since: Option<DateTime<Utc>>,
    max_seen: Option<DateTime<Utc>>,
    hold: Option<DateTime<Utc>>,
    /// A failure with no known lower bound on the first run: commit nothing.
    blocked: bool,
}

impl CursorTracker {
    pub fn new(since: Option<DateTime<Utc>>) -> Self {
        Self {
            since,
            ..Self::default()
        }
    }

    /// A case was read with this `last_updated_at`.
    pub fn saw(&mut self, last_updated_at: Option<DateTime<Utc>>) {
        if let Some(t) = last_updated_at {
            self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
        }
    }

    /// A record was not delivered; `needs` is the earliest referral date it
    /// depends on (`None`: unknown, so the previous cursor).
    pub fn hold(&mut self, needs: Option<DateTime<Utc>>) {
        match needs.or(self.since) {
            Some(t) => self.hold = Some(self.hold.map_or(t, |h| h.min(t))),
            None => self.blocked = true,
        }
    }

    /// The cursor to commit, when it moves forward.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        if self.blocked {
            return None;
        }
        let candidate = match (self.max_seen, self.hold) {
            (Some(m), Some(h)) => m.min(h),
            (Some(m), None) => m,
            (None, _) => return None,
        };
        match self.since {
            Some(s) if candidate <= s => None,
            _ => Some(candidate),
        }
    }
}

fn report_record(source_id: &str, outcome: RecordOutcome) -> RecordReport {
    // For outbound flows "acknowledged" means the target confirmed receipt.
    let acknowledged = outcome.is_delivered();
    RecordReport {
        source_id: source_id.to_string(),
        outcome,
        acknowledged,
        ack_error: None,
        would_acknowledge: None,
    }
}

/// The case owner's user name (who answers for a refused share).
fn owner_name(case: &Case) -> Option<String> {
    case.owned_by.clone().filter(|o| !o.is_empty())
}

/// The earliest referral date of `service_id` at or after `since`.
fn earliest_referral(
    referrals: &[Referral],
    service_id: &str,
    since: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    referrals
        .iter()
        .filter(|r| r.service_record_id.as_deref() == Some(service_id))
        .filter_map(|r| r.created_at)
        .filter(|t| since.is_none_or(|s| *t >= s))
        .min()
}

/// The ids of a case's services (a service without one cannot be referred).
fn service_ids(case: &Case) -> impl Iterator<Item = &str> {
    case.services_section
        .iter()
        .filter_map(|s| s.unique_id.as_deref())
}

/// Per-run state of the job side: the run's job instances, the users once.
struct Visitor<'r, 'a, D: Deliver> {
    run: &'r OutboundRun<'a, D>,
    pool: JobPool,
    ctx: JobContext,
    /// What this run may send (the run's mapping version).
    sharing: SharingCheck,
    /// Case owners by user name, each looked up at most once per run
    /// (`None`: Primero shows the API user no such user).
    users: HashMap<String, Option<User>>,
    /// Mapped referrals of the case being visited, handed to the partner
    /// once it is (see `visit_page`).
    pending: Vec<Pending<D::Payload>>,
    /// The referrals of the case being visited and of cases ahead of it
    /// on the page, read in advance (see `visit_page`).
    referrals: HashMap<String, Result<Vec<Referral>, ConnectorError>>,
    /// The job's answers for the services about to be visited, mapped
    /// together (see `map_window`).
    mapped: HashMap<String, Result<JobOutcome, JobFailure>>,
    /// Shared cases whose consent is watched; the gate's rules.
    watch: ConsentWatch,
    /// The audit of each share, refusal and revocation.
    audit: AuditContext,
    /// Services refused for lack of consent: visited whenever their case
    /// changes, with no lower bound on their referral's date.
    refused: HashSet<String>,
    /// The page's delivery records, read in one query while its first
    /// referral lists are: `None` when that failed (each service is then
    /// looked up alone). One lookup a service sat on each referral's path,
    /// queued behind the state writes of the cases in flight.
    known: Option<HashMap<String, Delivery>>,
}

/// Whether any referral of a case is recent enough to make a service new:
/// only a referral since the cursor can (the job decides which).
fn has_recent_referral(referrals: &[Referral], since: Option<DateTime<Utc>>) -> bool {
    referrals.iter().any(|r| {
        r.service_record_id.is_some() && since.is_none_or(|s| r.created_at.is_some_and(|t| t >= s))
    })
}

impl<D: Deliver> CaseVisitor for Visitor<'_, '_, D> {
    /// The page's cases as a pipeline: each case takes one of `concurrency`
    /// slots before its referrals are read and gives it back once its
    /// referrals are delivered, so reads, mapping and deliveries of
    /// different cases overlap. Done page-wide, one phase after the other,
    /// these left the partners idle for a third of a run (bench: 48% of
    /// the latency bound). Cases are still visited in page order, so what
    /// is mapped and reported is as before; outcomes are settled at the end
    /// of the page, in that order.
    async fn visit_page(&mut self, cases: &[Case], st: &mut ScanState) -> bool {
        let run = self.run;
        let width = run.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(width));
        let wanted: HashSet<&str> = cases
            .iter()
            .filter(|c| service_ids(c).any(|id| run.ledger.selects(id)))
            .map(|c| c.id.as_str())
            .collect();
        // Owned ids: a closure over borrowed ones trips the compiler's
        // higher-ranked lifetime check once the future must be `Send`.
        let ids: Vec<String> = cases
            .iter()
            .filter(|c| wanted.contains(c.id.as_str()))
            .map(|c| c.id.clone())
            .collect();
        let mut reads = stream::iter(ids)
            .map(|id| {
                let slots = slots.clone();
                async move {
                    let slot = slots.acquire_owned().await.ok().map(Arc::new);
                    let read = run.primero.list_referrals(&id).await;
                    (id, read, slot)
                }
            })
            .buffered(width);
        // This run alone writes the flow's delivery records (it holds the
        // flow), and a page lists each case once, so they are read once.
        let keys: Vec<String> = cases
            .iter()
            .filter(|c| wanted.contains(c.id.as_str()))
            .flat_map(service_ids)
            .filter(|id| run.ledger.selects(id))
            .map(str::to_string)
            .collect();
        // The owners of the cases read first are looked up with those
        // reads, not after them: otherwise the page's first referrals wait
        // a round trip more (bench: 1% of a 1,000-case run). A failure is
        // left to the visit that needs the owner, which reports it.
        let first_owners = cases
            .iter()
            .filter(|c| wanted.contains(c.id.as_str()))
            .take(width)
            .filter_map(|c| c.owned_by.clone())
            .collect::<Vec<_>>();
        let (owners, known, first) = tokio::join!(
            self.look_up_owners(first_owners),
            run.store.deliveries(run.flow, &keys),
            reads.next()
        );
        if let Err(e) = owners {
            tracing::debug!(error = %e, "case owners not looked up ahead; looked up again when needed");
        }
        self.known = match known {
            Ok(known) => Some(known),
            Err(e) => {
                tracing::warn!(error = %e, "state database: the page's deliveries not read at once; looked up one by one");
                None
            }
        };
        // Answered reads not yet taken in (while a case is visited).
        let mut arrived: Vec<_> = first.into_iter().collect();
        let mut case_slots: HashMap<String, Option<Arc<OwnedSemaphorePermit>>> = HashMap::new();
        let sharing = self.sharing.clone();
        let deliver = |order: usize, p: Pending<D::Payload>, slot| {
            let sharing = sharing.clone();
            async move {
                let outcome = deliver_one(run, &sharing, &p).await;
                drop(slot);
                (order, p, outcome)
            }
        };
        let mut in_flight = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut order = 0;
        let mut finished = true;
        for (i, case) in cases.iter().enumerate() {
            if !st.enter(case) {
                finished = false;
                break;
            }
            // Whatever waits, the reads and the deliveries are polled too:
            // an answered read holds one of the client's Primero call slots
            // until it is, and the visit may need one (case owners).
            while wanted.contains(case.id.as_str())
                && !self.referrals.contains_key(&case.id)
                && !arrived.iter().any(|(id, _, _)| id == &case.id)
            {
                tokio::select! {
                    Some(d) = in_flight.next() => done.push(d),
                    read = reads.next() => match read {
                        Some(read) => arrived.push(read),
                        None => break,
                    },
                }
            }
            // Taken in before the visit, so the job maps their cases with
            // this one (`map_window`).
            for (id, read, slot) in arrived.drain(..) {
                case_slots.insert(id.clone(), slot);
                self.referrals.insert(id, read);
            }
            {
                let visit = self
                    .one_case(st, case, &cases[i + 1..])
                    .instrument(case_span(case));
                tokio::pin!(visit);
                loop {
                    tokio::select! {
                        () = &mut visit => break,
                        Some(d) = in_flight.next() => done.push(d),
                        Some(read) = reads.next() => arrived.push(read),
                    }
                }
            }
            let slot = case_slots.remove(&case.id).flatten();
            for p in std::mem::take(&mut self.pending) {
                in_flight.push(deliver(order, p, slot.clone()));
                order += 1;
            }
        }
        // Reads not started yet are dropped (stopping); what was handed to
        // the partner is waited for.
        drop(reads);
        while let Some(d) = in_flight.next().await {
            done.push(d);
        }
        // The page's referral lists go before the next page is read (two
        // pages' worth at once grew a long run's memory by a third).
        self.mapped.clear();
        self.referrals = HashMap::new();
        self.known = None;
        self.settle_pending(st, done).await;
        finished
    }
}

/// Hand one referral to the partner.
async fn deliver_one<D: Deliver>(
    run: &OutboundRun<'_, D>,
    sharing: &SharingCheck,
    p: &Pending<D::Payload>,
) -> RecordOutcome {
    if run.dry_run {
        return run.deliver.planned(&p.item, p.previous.as_ref());
    }
    if run.holding.is_lost() {
        // Not sent: the holder of the flow finds it next run.
        return failed(
            super::case_upsert::NOT_HELD,
            "not sent: this replica's lease of the flow can no longer be counted on",
        );
    }
    let span = tracing::info_span!("record", record = %p.service_id);
    run.deliver
        .deliver(&p.item, p.previous.as_ref(), sharing)
        .instrument(span)
        .await
}

impl<D: Deliver> OutboundRun<'_, D> {
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
        let refused = match self.store.delivery_keys(self.flow, FP_NO_CONSENT).await {
            Ok(keys) => keys.into_iter().collect(),
            Err(e) => return RunReport::aborted(self.flow, run_id, e.to_string()),
        };
        let audit = AuditContext::new(self.flow, run_id, &instance, self.dry_run);
        let ctx = JobContext {
            flow: self.flow.into(),
            run_id: run_id.into(),
            today: today.into(),
            dry_run: self.dry_run,
        };
        let mut visitor = Visitor {
            audit,
            run: self,
            sharing: SharingCheck::for_instance(self.flow, &instance),
            // A window of services is shared out between the pool's
            // instances, which map their parts at once (see `map_window`).
            pool: JobPool::start(instance, ctx.clone(), MAX_RECORDS_PER_CALL),
            watch,
            refused,
            ctx,
            users: HashMap::new(),
            pending: Vec::new(),
            referrals: HashMap::new(),
            mapped: HashMap::new(),
            known: None,
        };
        let user = self.associated_user.clone();
        let query = move |from| query(user.as_deref(), from);
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
        let scan_run = scan.run(report, &mut visitor);
        let warm_up = self.deliver.warm_up();
        tokio::pin!(scan_run, warm_up);
        // A dry run calls no partner; a warm-up still going (a failing token
        // service, retried) when the scan is done is dropped.
        let mut warming = !self.dry_run;
        let report = loop {
            tokio::select! {
                report = &mut scan_run => break report,
                () = &mut warm_up, if warming => warming = false,
            }
        };
        tracing::info!(
            cases = report.fetched,
            sent = report.count("sent"),
            already_sent = report.count("already sent"),
            would_send = report.count("would write"),
            skipped = report.count("skipped"),
            failed = report.count("failed"),
            "run finished"
        );
        report
    }
}

/// Cases changed since `from`, oldest change first.
fn query(associated_user: Option<&str>, from: Option<DateTime<Utc>>) -> CaseQuery {
    let mut q = CaseQuery::new().order_by(CaseOrderBy::LastUpdatedAt, SortOrder::Asc);
    if let Some(user) = associated_user {
        q = q.associated_user_name(user.to_string());
    }
    if let Some(t) = from {
        q = q.updated_since(t);
    }
    q
}

/// The job's input for one service of a case.
fn bundle_json(
    case: &Case,
    service_id: &str,
    referrals: &[Referral],
    since: Option<DateTime<Utc>>,
    owner: Option<&User>,
) -> serde_json::Result<String> {
    serde_json::to_string(&Bundle {
        case,
        service_id,
        referrals,
        since: since.map(format_cursor),
        owner,
    })
}

impl<D: Deliver> Visitor<'_, '_, D> {
    /// Map `service_id` of `case` together with the services visited after
    /// it (the rest of this case's, then those of the cases `ahead`), up to
    /// one job call's worth (`MAX_RECORDS_PER_CALL`): the bundles
    /// `one_service` would build, so the same answers, without each paying
    /// a call's fixed cost. A window rather than the whole page keeps the
    /// bundles and answers held at once few. Needs the users loaded; a case
    /// whose referral read failed is left to `one_case`, which reports it.
    async fn map_window(
        &mut self,
        st: &ScanState,
        (case, service_id, referrals): (&Case, &str, &[Referral]),
        ahead: &[Case],
    ) {
        let ledger = self.run.ledger;
        let wanted = |id: &str| ledger.selects(id) && ledger.parked(id).is_none();
        let mut items: Vec<(String, String)> = Vec::new();
        let add = |items: &mut Vec<_>,
                   c: &Case,
                   id: &str,
                   referrals: &[Referral],
                   owner: Option<&User>| {
            let since = self.since_for(id, st.since);
            if let Ok(json) = bundle_json(c, id, referrals, since, owner) {
                items.push((id.to_string(), json));
            }
        };
        let owner = self.owner(case);
        for id in service_ids(case).skip_while(|id| *id != service_id) {
            if wanted(id) {
                add(&mut items, case, id, referrals, owner.as_ref());
            }
        }
        'cases: for next in ahead {
            let Some(Ok(referrals)) = self.referrals.get(&next.id) else {
                continue;
            };
            if !self.due(next, referrals, st.since) {
                continue;
            }
            let owner = self.owner(next);
            for id in service_ids(next) {
                if items.len() >= MAX_RECORDS_PER_CALL {
                    break 'cases;
                }
                if wanted(id) {
                    add(&mut items, next, id, referrals, owner.as_ref());
                }
            }
        }
        let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
        let answers = self.pool.run_batch(items).await;
        self.mapped.extend(ids.into_iter().zip(answers));
    }

    /// Look up the owners of `case` and of the cases `ahead` with a recent
    /// referral (those `map_window` may map), by user name: one call per
    /// owner a run, not every user of the instance page by page.
    async fn load_owners(
        &mut self,
        case: &Case,
        ahead: &[Case],
        since: Option<DateTime<Utc>>,
    ) -> Result<(), ConnectorError> {
        let recent =
            |c: &Case| matches!(self.referrals.get(&c.id), Some(Ok(r)) if self.due(c, r, since));
        let names = std::iter::once(case)
            .chain(ahead.iter().filter(|c| recent(c)))
            .filter_map(|c| c.owned_by.clone())
            .collect::<Vec<_>>();
        self.look_up_owners(names).await
    }

    /// Look up the owners not known yet, all at once: one after another, a
    /// page whose first cases have many owners waited a round trip per
    /// owner with every record slot idle.
    async fn look_up_owners(
        &mut self,
        names: impl IntoIterator<Item = String>,
    ) -> Result<(), ConnectorError> {
        let names: std::collections::BTreeSet<String> = names
            .into_iter()
            .filter(|name| !self.users.contains_key(name))
            .collect();
        let primero = self.run.primero;
        let answers = futures::future::join_all(names.into_iter().map(|name| async move {
            let page = primero.users_named(&name, false).await;
            (name, page)
        }))
        .await;
        let mut first_error = None;
        for (name, page) in answers {
            match page {
                Ok(page) => {
                    // Only the row of exactly this name: a server that
                    // ignores the filter answers every user.
                    let user = page.data.into_iter().find(|u| u.user_name == name);
                    tracing::debug!(found = user.is_some(), "case owner looked up");
                    self.users.insert(name, user);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether a case has a service the job may find new: a referral since
    /// the cursor, or a service the consent gate refused earlier.
    fn due(&self, case: &Case, referrals: &[Referral], since: Option<DateTime<Utc>>) -> bool {
        has_recent_referral(referrals, since)
            || service_ids(case).any(|id| self.refused.contains(id))
    }

    /// The lower bound the job applies to a service's referrals: none for
    /// one refused for lack of consent (its referral may predate the cursor).
    fn since_for(&self, service_id: &str, since: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        if self.refused.contains(service_id) {
            None
        } else {
            since
        }
    }

    /// The case owner's user record, when Primero knows them.
    fn owner(&self, case: &Case) -> Option<User> {
        let owner = case.owned_by.as_deref()?;
        self.users.get(owner).cloned().flatten()
    }

    async fn one_case(&mut self, st: &mut ScanState, case: &Case, ahead: &[Case]) {
        let run = self.run;
        let revoked = self
            .watch
            .observe(run.store, (run.flow, &self.ctx.run_id), case)
            .await;
        if let Some(line) = &revoked {
            let share = Share::new(Some(case.id.clone()), None, Basis::Absent);
            self.audit
                .record(run.store, &line.source_id, &line.outcome, &share)
                .await;
        }
        st.report.extend(revoked);
        let service_ids: Vec<&str> = service_ids(case).collect();
        if service_ids.is_empty() {
            return;
        }
        let read = match self.referrals.remove(&case.id) {
            Some(read) => read,
            None => run.primero.list_referrals(&case.id).await,
        };
        let referrals = match read {
            Ok(r) => r,
            Err(e) => {
                // Recorded under the case id: no service was reached.
                st.tracker.hold(None);
                let outcome = run.ledger.settle(&case.id, partner_failure(&e), None).await;
                st.report.push(report_record(&case.id, outcome));
                return;
            }
        };
        let since = st.since;
        if !self.due(case, &referrals, since) {
            return;
        }
        if let Err(e) = self.load_owners(case, ahead, since).await {
            let needs = service_ids
                .iter()
                .filter_map(|id| earliest_referral(&referrals, id, since))
                .min();
            st.tracker.hold(needs);
            st.report.push(report_record(&case.id, partner_failure(&e)));
            return;
        }
        let owner = self.owner(case);
        for service_id in service_ids {
            if !run.ledger.selects(service_id) {
                continue;
            }
            if let Some(parked) = run.ledger.parked(service_id) {
                st.report.push(report_record(service_id, parked));
                continue;
            }
            let span = tracing::info_span!("record", record = %service_id);
            let outcome = self
                .one_service(st, (case, service_id, &referrals), owner.as_ref(), ahead)
                .instrument(span.clone())
                .await;
            if let Some((outcome, needs)) = outcome {
                let needs = needs.or_else(|| earliest_referral(&referrals, service_id, since));
                let outcome = run
                    .ledger
                    .settle(service_id, outcome, needs.map(format_cursor).as_deref())
                    .instrument(span)
                    .await;
                if outcome.holds_cursor() {
                    st.tracker.hold(needs);
                }
                if matches!(outcome, RecordOutcome::NoConsent { .. }) {
                    let share = Share::new(Some(case.id.clone()), owner_name(case), Basis::Absent);
                    self.audit
                        .record(run.store, service_id, &outcome, &share)
                        .await;
                }
                tracing::info!(outcome = outcome.label(), "referral handled");
                st.report.push(report_record(service_id, outcome));
            }
        }
    }

    /// One service: `None` when it is not a new UNHCR referral; else the
    /// outcome and, when known, the referral date it needs the cursor to keep.
    async fn one_service(
        &mut self,
        st: &ScanState,
        (case, service_id, referrals): (&Case, &str, &[Referral]),
        owner: Option<&User>,
        ahead: &[Case],
    ) -> Option<(RecordOutcome, Option<DateTime<Utc>>)> {
        if !self.mapped.contains_key(service_id) {
            self.map_window(st, (case, service_id, referrals), ahead)
                .await;
        }
        let result = match self.mapped.remove(service_id) {
            Some(result) => result,
            // Its bundle could not be built in the window: alone, to report why.
            None => {
                let since = self.since_for(service_id, st.since);
                let json = match bundle_json(case, service_id, referrals, since, owner) {
                    Ok(j) => j,
                    Err(e) => return Some((failed("internal", e.to_string()), None)),
                };
                self.pool.run(service_id, json).await
            }
        };
        let item = match result {
            Ok(JobOutcome::Skip(reason)) if reason.split(':').next() == Some(NOT_REFERRED) => {
                return None
            }
            Ok(JobOutcome::Skip(reason)) => return Some((RecordOutcome::Skipped { reason }, None)),
            Err(e) => return Some((failed(e.code(), e.to_string()), None)),
            Ok(JobOutcome::Emit(value)) => {
                match serde_json::from_value::<EmittedReferral<D::Payload>>(value) {
                    Ok(item) if item.service_id == service_id => item,
                    Ok(_) => {
                        let why = format!(
                            "job {} emitted another service's referral",
                            self.pool.job().name
                        );
                        return Some((failed("job-invalid-output", why), None));
                    }
                    Err(e) => {
                        let why = format!(
                            "job {} emitted an unexpected shape: {e}",
                            self.pool.job().name
                        );
                        return Some((failed("job-invalid-output", why), None));
                    }
                }
            }
        };
        if !item.admin_contact.is_empty() {
            // Business rule kept from the original, but no longer silent (spec §5.7).
            tracing::warn!(
                case = %case.id,
                service = %service_id,
                fields = %item.admin_contact.join(","),
                "caseworker profile incomplete: admin contact sent instead"
            );
        }
        let needs = Some(item.referred_at);
        let known = self.known.as_mut().map(|k| k.remove(service_id));
        let previous = match known {
            Some(previous) => Ok(previous),
            None => self.run.store.delivery(self.run.flow, service_id).await,
        };
        let previous = match previous {
            Ok(p) => p,
            Err(e) => return Some((failed("state", e.to_string()), needs)),
        };
        if let Some(p) = previous.as_ref().filter(|p| p.fingerprint == FP_DELIVERED) {
            return Some((
                RecordOutcome::AlreadySent {
                    target_id: p.target_id.clone(),
                },
                needs,
            ));
        }
        let referral = referrals
            .iter()
            .find(|r| item.referral_id.as_deref() == Some(r.id.as_str()));
        let overridden = referral
            .and_then(|r| r.extra.get("consent_overridden"))
            .is_some_and(|v| v == &serde_json::Value::Bool(true));
        let basis = match self.watch.rules().outbound(self.run.flow, case, overridden) {
            Ok(basis) => basis,
            Err(refusal) => {
                // Remembered so the case's next change brings it back.
                if !self.run.dry_run {
                    if let Err(e) = self
                        .run
                        .store
                        .record_delivery(self.run.flow, service_id, FP_NO_CONSENT, None)
                        .await
                    {
                        return Some((failed("state", e.to_string()), needs));
                    }
                }
                return Some((refusal, needs));
            }
        };
        let permitted_by = referral
            .and_then(|r| r.extra.get("transitioned_by"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| case.owned_by.clone());
        // Handed to the partner once the case is visited (see `visit_page`).
        self.pending.push(Pending {
            case_id: case.id.clone(),
            basis,
            permitted_by,
            service_id: service_id.to_string(),
            item,
            previous,
            needs,
        });
        None
    }

    /// Count each outcome's attempt, hold the cursor for what failed, report.
    async fn settle_pending(
        &mut self,
        st: &mut ScanState,
        mut done: Vec<(usize, Pending<D::Payload>, RecordOutcome)>,
    ) {
        if done.is_empty() {
            return;
        }
        done.sort_unstable_by_key(|(order, _, _)| *order);
        let run = self.run;
        if !run.dry_run {
            if let Err(why) = run.deliver.flush().await {
                // Not known as delivered: confirmed with the partner again
                // next run (never sent again), so held like a failure.
                tracing::error!(error = %why, "state database: confirmed deliveries not recorded");
                for (_, _, outcome) in &mut done {
                    if outcome.is_delivered() {
                        *outcome = failed("state", why.clone());
                    }
                }
            }
        }
        let (pending, outcomes): (Vec<_>, Vec<_>) =
            done.into_iter().map(|(_, p, o)| (p, o)).unzip();
        let mut settled = Vec::with_capacity(pending.len());
        let mut shared = Vec::new();
        for (p, outcome) in pending.iter().zip(outcomes) {
            let span = tracing::info_span!("record", record = %p.service_id);
            let outcome = run
                .ledger
                .settle(
                    &p.service_id,
                    outcome,
                    p.needs.map(format_cursor).as_deref(),
                )
                .instrument(span.clone())
                .await;
            if outcome.holds_cursor() {
                st.tracker.hold(p.needs);
            }
            // Watched only when it went on recorded consent: an override
            // or an uncovered flow had none to lose.
            if matches!(outcome, RecordOutcome::Sent { .. }) && p.basis == Basis::Recorded {
                shared.push(p.case_id.clone());
            }
            let share = Share::new(Some(p.case_id.clone()), p.permitted_by.clone(), p.basis);
            span.in_scope(|| tracing::info!(outcome = outcome.label(), "referral handled"));
            settled.push((outcome, share));
        }
        // The page's shared cases and audit entries in one write each (one
        // disk sync each).
        self.watch.shared_all(run.store, run.flow, shared).await;
        self.audit
            .record_all(
                run.store,
                pending
                    .iter()
                    .zip(&settled)
                    .map(|(p, (outcome, share))| (p.service_id.as_str(), outcome, share)),
            )
            .await;
        for (p, (outcome, _)) in pending.iter().zip(settled) {
            st.report.push(report_record(&p.service_id, outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cursor_is_the_greatest_last_updated_at_read_not_now() {
        let mut c = CursorTracker::new(Some(t("2024-06-01T00:00:00Z")));
        c.saw(Some(t("2024-06-03T00:00:00Z")));
        c.saw(Some(t("2024-06-02T00:00:00Z")));
        assert_eq!(c.next(), Some(t("2024-06-03T00:00:00Z")));
    }

    #[test]
    fn a_failed_referral_holds_the_cursor_at_its_date() {
        let mut c = CursorTracker::new(Some(t("2024-06-01T00:00:00Z")));
        c.saw(Some(t("2024-06-05T00:00:00Z")));
        // Referred on the 2nd, case edited on the 4th, send failed.
        c.saw(Some(t("2024-06-04T00:00:00Z")));
        c.hold(Some(t("2024-06-02T00:00:00Z")));
        assert_eq!(c.next(), Some(t("2024-06-02T00:00:00Z")));
        // Unknown date: the previous cursor stays.
        c.hold(None);
        assert_eq!(c.next(), None);
    }

    #[test]
    fn first_run_failure_without_a_date_commits_nothing() {
        let mut c = CursorTracker::new(None);
        c.saw(Some(t("2024-06-05T00:00:00Z")));
        c.hold(None);
        assert_eq!(c.next(), None);
        // Nothing read: nothing to commit either.
        assert_eq!(CursorTracker::new(None).next(), None);
    }

    #[test]
    fn earliest_referral_of_the_service_since_the_cursor() {
        let r = |sid: &str, at: &str| Referral {
            id: format!("r-{at}"),
            status: bridge_partners::primero::ReferralStatus::InProgress,
            record_id: None,
            service_record_id: Some(sid.into()),
            created_at: Some(t(at)),
            transitioned_to: None,
            rejected_reason: None,
            extra: Default::default(),
        };
        let list = [
            r("a", "2024-06-01T00:00:00Z"),
            r("a", "2024-06-03T00:00:00Z"),
            r("a", "2024-06-04T00:00:00Z"),
            r("b", "2024-06-02T00:00:00Z"),
        ];
        assert_eq!(
            earliest_referral(&list, "a", Some(t("2024-06-02T00:00:00Z"))),
            Some(t("2024-06-03T00:00:00Z"))
        );
        assert_eq!(earliest_referral(&list, "c", None), None);
    }
}

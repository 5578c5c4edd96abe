//! Reading the Primero cases changed since a flow's cursor, the part the
//! cursor flows share (PING 1.2 and 2.1, DTP 1-2 and 2-1).
//!
//! - Every page is read, by keyset: page 1 of `last_updated_at >= <greatest
//!   seen>`, ascending, so cases edited during the run cannot shift a page
//!   and be skipped. A case is visited once per version in a run.
//! - Primero v2.11+ stamps `last_updated_at` in whole seconds and sorts
//!   without a tie-breaker: cases sharing a second come in any order, which
//!   may change from one request to the next, so page numbers cannot walk
//!   through them. When a whole page shares one second, that second is read
//!   on its own (`S..S`) and re-read until every one of its `total` cases
//!   was seen; then the scan moves on from the next second.
//! - The cursor is committed after the run, only as far as the visitor's
//!   [`CursorTracker`] allows (records written or dead-lettered).
//! - A replay reads from its own starting point and leaves the cursor alone.
//! - On shutdown the scan stops between cases; what was visited counts.
//! - Never without a lower bound: the first run of a flow reads from its
//!   configured `initial_cursor`, and a flow with neither a stored nor an
//!   initial cursor refuses to run (it would send every historic record).
//! - A page with fewer rows than the listing's total implies stops the run
//!   without moving the cursor past it: a skipped row is read next run.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ledger::Ledger;
use super::outbound_referrals::{format_cursor, read_cursor, CursorTracker};
use super::report::RunReport;
use bridge_partners::primero::{Case, CaseQuery, Page, PrimeroClient, MAX_PER};
use bridge_store::Store;

/// What a cursor flow does with each changed case.
#[allow(async_fn_in_trait)]
pub trait CaseVisitor {
    /// Handle one case: push its records to `st.report`, hold `st.tracker`
    /// for any record that must be read again. `ahead`: the cases after it
    /// on the page (some may be skipped as already handled), for a visitor
    /// that works on several at once. Every visitor implements it, unless
    /// it replaces `visit_page` (which alone calls it).
    async fn visit(&mut self, _case: &Case, _ahead: &[Case], _st: &mut ScanState) {}

    /// Every case of a page was visited (also before the scan stops): the
    /// moment to finish work collected from its cases.
    async fn end_page(&mut self, _st: &mut ScanState) {}

    /// Visit a page's cases in order, then `end_page`; false when the scan
    /// must stop. A visitor that overlaps the work of several cases
    /// replaces it, calling [`ScanState::enter`] before each case as this
    /// does.
    async fn visit_page(&mut self, cases: &[Case], st: &mut ScanState) -> bool {
        for (i, case) in cases.iter().enumerate() {
            if !st.enter(case) {
                self.end_page(st).await;
                return false;
            }
            self.visit(case, &cases[i + 1..], st)
                .instrument(case_span(case))
                .await;
        }
        self.end_page(st).await;
        true
    }
}

/// The span of one case's visit (its id only).
pub fn case_span(case: &Case) -> tracing::Span {
    tracing::info_span!("case", case = %case.id)
}

/// What the scan and its visitor share during a run.
pub struct ScanState {
    /// The lower bound of this run (the cursor, or the replay's start).
    pub since: Option<DateTime<Utc>>,
    pub tracker: CursorTracker,
    pub report: RunReport,
    /// Shutdown: the scan stops between cases.
    stop: CancellationToken,
}

impl ScanState {
    /// Before visiting `case`: false when shutting down (the scan stops
    /// before it), else it counts as read.
    pub fn enter(&mut self, case: &Case) -> bool {
        if self.stopped() {
            return false;
        }
        self.report.fetched += 1;
        self.tracker.saw(case.last_updated_at);
        true
    }

    fn stopped(&mut self) -> bool {
        if !self.stop.is_cancelled() {
            return false;
        }
        tracing::info!("shutting down: scan stopped between cases");
        self.report.stopped = true;
        true
    }
}

/// Passes over one second's cases before the scan gives up on collecting
/// them all (each pass sees every page once; ties come in any order).
const MAX_SECOND_PASSES: u32 = 20;

pub struct CaseScan<'a> {
    pub flow: &'static str,
    pub primero: &'a PrimeroClient,
    pub store: &'a dyn Store,
    pub ledger: &'a Ledger<'a>,
    pub stop: &'a CancellationToken,
    /// The listing query for a lower bound (filters, order by
    /// `last_updated_at` ascending).
    pub query: &'a (dyn Fn(Option<DateTime<Utc>>) -> CaseQuery + Sync),
    /// Where the first run reads from when no cursor is stored yet
    /// (`[flows."<flow>"] initial_cursor`).
    pub initial: Option<DateTime<Utc>>,
    /// Dry run: read and report, but leave the cursor where it is.
    pub dry_run: bool,
}

/// Why a cursor flow with neither a stored nor an initial cursor does not
/// run, and the two ways to give it one.
pub fn missing_cursor(flow: &str) -> String {
    format!(
        "flow {flow} has no cursor yet and no initial cursor: refusing to read every historic Primero case. \
         Set `initial_cursor = \"<RFC 3339>\"` under [flows.\"{flow}\"] in bridge.toml (e.g. when the OpenFn job it replaces last ran, \
         \"2026-11-30T00:00:00Z\"), or store one with `bridge cursor set {flow} <RFC 3339> --config bridge.toml`"
    )
}

impl CaseScan<'_> {
    /// Visit every case changed since the cursor, then commit the cursor.
    pub async fn run(&self, mut report: RunReport, visitor: &mut impl CaseVisitor) -> RunReport {
        let stored = match read_cursor(self.store, self.flow).await {
            Ok(stored) => stored,
            Err(why) => {
                report.aborted = Some(why);
                return report;
            }
        };
        let since = match self.ledger.replay() {
            // Entries without a hint: from the earliest bound the flow knows.
            Some(replay) => replay
                .since
                .or_else(|| stored.into_iter().chain(self.initial).min()),
            None => stored.or(self.initial),
        };
        let Some(since) = since else {
            tracing::error!(flow = self.flow, "no cursor and no initial cursor");
            report.aborted = Some(missing_cursor(self.flow));
            return report;
        };
        tracing::info!(
            cursor = %format_cursor(since),
            stored = stored.is_some(),
            replay = self.ledger.replay().is_some(),
            "reading cases changed since the cursor"
        );
        let mut st = ScanState {
            since: Some(since),
            tracker: CursorTracker::new(Some(since)),
            report,
            stop: self.stop.clone(),
        };
        self.read_cases(&mut st, visitor).await;
        let mut report = st.report;
        if self.ledger.replay().is_some() {
            return report;
        }
        if self.dry_run {
            match st.tracker.next() {
                Some(next) => {
                    tracing::info!(cursor = %format_cursor(next), "dry run: the cursor would move here; it stays")
                }
                None => tracing::info!("dry run: the cursor would stay"),
            }
            return report;
        }
        match st.tracker.next() {
            Some(next) => match self.store.set_cursor(self.flow, &format_cursor(next)).await {
                Ok(()) => tracing::info!(cursor = %format_cursor(next), "cursor committed"),
                Err(e) => report.aborted = Some(e.to_string()),
            },
            None => tracing::info!("cursor unchanged"),
        }
        report
    }

    async fn read_cases(&self, st: &mut ScanState, visitor: &mut impl CaseVisitor) {
        let mut from = st.since;
        // Only for cases without a `last_updated_at` (none to key on).
        let mut page_no = 1;
        // Cases already handled in this run, with the version handled.
        let mut seen: HashMap<String, Option<DateTime<Utc>>> = HashMap::new();
        loop {
            let query = (self.query)(from);
            let Some(page) = self.fetch(&query, page_no, from, st).await else {
                return;
            };
            let more = page.has_next();
            let newest = page.data.iter().filter_map(|c| c.last_updated_at).max();
            if !self.visit_page(page.data, &mut seen, st, visitor).await {
                return;
            }
            if !more {
                return;
            }
            match newest {
                Some(t) if from.is_none_or(|f| t > f) => {
                    from = Some(t);
                    page_no = 1;
                }
                // A whole page on one second, and more behind it.
                Some(t) => {
                    let second = t.trunc_subsecs(0);
                    if !self.read_second(second, &mut seen, st, visitor).await {
                        return;
                    }
                    from = Some(second + chrono::Duration::seconds(1));
                    page_no = 1;
                }
                None => page_no += 1,
            }
            // A case older than the new lower bound is not listed again
            // (changed, it is newer): forgotten, so a long run's memory does
            // not grow with its cases.
            if let Some(f) = from {
                seen.retain(|_, at| at.is_none_or(|at| at >= f));
            }
        }
    }

    /// Every case stamped in `second`, however Primero orders them: passes
    /// over the pages of `second..second` until as many distinct cases were
    /// listed as the listing's total. False when the scan must stop (the
    /// reason is in the report, the cursor held at `second`).
    async fn read_second(
        &self,
        second: DateTime<Utc>,
        seen: &mut HashMap<String, Option<DateTime<Utc>>>,
        st: &mut ScanState,
        visitor: &mut impl CaseVisitor,
    ) -> bool {
        let until = second + chrono::Duration::milliseconds(999);
        let query = (self.query)(Some(second)).updated_until(until).per(MAX_PER);
        // Only counted (distinct cases against the total), so a hash of
        // each id will do: a collision costs one more pass, never a case.
        let mut listed: HashSet<u64> = HashSet::new();
        let mut total = 0;
        for pass in 1..=MAX_SECOND_PASSES {
            let mut page_no = 1;
            loop {
                let Some(page) = self.fetch(&query, page_no, Some(second), st).await else {
                    return false;
                };
                total = page.total;
                let has_next = page.has_next();
                listed.extend(page.data.iter().map(|c| id_hash(&c.id)));
                if !self.visit_page(page.data, seen, st, visitor).await {
                    return false;
                }
                if listed.len() as u64 >= total {
                    return true;
                }
                if !has_next {
                    break;
                }
                page_no += 1;
            }
            tracing::debug!(
                pass,
                listed = listed.len(),
                total,
                "cases sharing one second came in another order; reading the second again"
            );
        }
        st.tracker.hold(Some(second));
        st.report.aborted = Some(format!(
            "Primero listed {} of the {total} cases updated at {} in {MAX_SECOND_PASSES} passes (it orders cases of one second arbitrarily); the cursor stays",
            listed.len(),
            format_cursor(second)
        ));
        false
    }

    /// One page, or `None` when the run must stop (reason in the report).
    /// A page shorter than its total implies means rows went missing on the
    /// way: stop, and keep the cursor at `from`, where the listing began.
    async fn fetch(
        &self,
        query: &CaseQuery,
        page_no: u64,
        from: Option<DateTime<Utc>>,
        st: &mut ScanState,
    ) -> Option<Page<Case>> {
        let page = match self.primero.list_cases_page(query, page_no).await {
            Ok(p) => p,
            Err(e) => {
                // Everything read so far still counts for the cursor.
                st.report.aborted = Some(e.to_string());
                return None;
            }
        };
        let expected = page.per.min(
            page.total
                .saturating_sub(page.page.saturating_sub(1) * page.per),
        );
        if (page.data.len() as u64) < expected {
            st.tracker.hold(from);
            st.report.aborted = Some(format!(
                "Primero listing page {} served {} of the {expected} rows its total implies; the cursor stays",
                page.page,
                page.data.len()
            ));
            return None;
        }
        Some(page)
    }

    /// Visit the cases of a page not yet handled in this version (re-read
    /// pages repeat many). False when shutting down.
    async fn visit_page(
        &self,
        mut cases: Vec<Case>,
        seen: &mut HashMap<String, Option<DateTime<Utc>>>,
        st: &mut ScanState,
        visitor: &mut impl CaseVisitor,
    ) -> bool {
        cases.retain(|c| seen.insert(c.id.clone(), c.last_updated_at) != Some(c.last_updated_at));
        if cases.is_empty() {
            return !st.stopped();
        }
        visitor.visit_page(&cases, st).await
    }
}

/// A case id's 64-bit hash, for counting distinct cases.
fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::{DateTime, Utc};
    use serde_json::Map;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::ledger::{DeliveryPolicy, Ledger};
    use bridge_partners::primero::{CaseOrderBy, PrimeroAuth, PrimeroConfig, SortOrder};
    use bridge_sim::primero::{PrimeroSim, PrimeroSimConfig};
    use bridge_store::SqliteStore;

    /// Records every case it is handed.
    #[derive(Default)]
    struct Collect(Vec<String>);

    impl CaseVisitor for Collect {
        async fn visit(&mut self, case: &Case, _ahead: &[Case], _st: &mut ScanState) {
            self.0.push(case.id.clone());
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn query(from: Option<DateTime<Utc>>) -> CaseQuery {
        let q = CaseQuery::new().order_by(CaseOrderBy::LastUpdatedAt, SortOrder::Asc);
        match from {
            Some(t) => q.updated_since(t),
            None => q,
        }
    }

    /// Primero v2.11+ stamps whole seconds and orders ties arbitrarily: 25
    /// cases on one second behind pages of 10 must each be visited exactly
    /// once, and the cursor must end on the last second.
    #[tokio::test]
    async fn cases_sharing_a_second_across_pages_are_each_visited_once() {
        let sim = PrimeroSim::new(PrimeroSimConfig {
            max_per: 10,
            ..PrimeroSimConfig::default()
        });
        // 4 cases a second earlier, 25 on one second, 7 a second later.
        let mut ids = Vec::new();
        for (second, n) in [
            ("2031-03-01T08:00:01Z", 4),
            ("2031-03-01T08:00:02Z", 25),
            ("2031-03-01T08:00:03Z", 7),
        ] {
            sim.pin_clock(Some(at(second)));
            for _ in 0..n {
                ids.push(sim.insert_case(Map::new()).unwrap());
            }
        }
        let running = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let config = PrimeroSimConfig::default();
        let primero = PrimeroClient::new(PrimeroConfig::new(
            running.base_url(),
            PrimeroAuth::Basic {
                user_name: config.user_name,
                password: config.password,
            },
        ))
        .unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        let stop = CancellationToken::new();
        let expected: HashSet<String> = ids.iter().cloned().collect();
        // Ties come in a new order each request: try several runs.
        for run in 0..8 {
            let flow = format!("scan-test-{run}");
            let ledger = Ledger::load(&store, &flow, DeliveryPolicy::default(), None)
                .await
                .unwrap();
            let scan = CaseScan {
                flow: Box::leak(flow.clone().into_boxed_str()),
                primero: &primero,
                store: &store,
                ledger: &ledger,
                stop: &stop,
                query: &query,
                initial: Some(at("2031-03-01T00:00:00Z")),
                dry_run: false,
            };
            let mut visitor = Collect::default();
            let report = scan.run(RunReport::default(), &mut visitor).await;
            assert_eq!(report.aborted, None, "run {run}");
            let visited: HashSet<String> = visitor.0.iter().cloned().collect();
            assert_eq!(
                visitor.0.len(),
                visited.len(),
                "run {run}: a case visited twice"
            );
            assert_eq!(
                visited.len(),
                expected.len(),
                "run {run}: {} of {} cases lost",
                expected.difference(&visited).count(),
                expected.len()
            );
            assert_eq!(visited, expected, "run {run}");
            assert_eq!(report.fetched, expected.len());
            assert_eq!(
                store.cursor(&flow).await.unwrap().as_deref(),
                Some("2031-03-01T08:00:03.000Z"),
                "run {run}"
            );
        }
        running.shutdown().await;
    }
}

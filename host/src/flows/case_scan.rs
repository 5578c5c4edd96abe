//! Reading the Primero cases changed since a flow's cursor, the part the
//! cursor flows share (PING 1.2 and 2.1, DTP 1-2 and 2-1).
//!
//! - Every page is read, by keyset: page 1 of `last_updated_at >= <greatest
//!   seen>`, ascending, so cases edited during the run cannot shift a page
//!   and be skipped (page numbers are only followed through a run of cases
//!   sharing one timestamp). A case is visited once per version in a run.
//! - The cursor is committed after the run, only as far as the visitor's
//!   [`CursorTracker`] allows (records written or dead-lettered).
//! - A replay reads from its own starting point and leaves the cursor alone.
//! - On shutdown the scan stops between cases; what was visited counts.
//! - Never without a lower bound: the first run of a flow reads from its
//!   configured `initial_cursor`, and a flow with neither a stored nor an
//!   initial cursor refuses to run (it would send every historic record).
//! - A page with fewer rows than the listing's total implies stops the run
//!   without moving the cursor past it: a skipped row is read next run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ledger::Ledger;
use super::outbound_referrals::{format_cursor, read_cursor, CursorTracker};
use super::report::RunReport;
use crate::connectors::primero::{Case, CaseQuery, PrimeroClient};
use crate::store::Store;

/// What a cursor flow does with each changed case.
#[allow(async_fn_in_trait)]
pub trait CaseVisitor {
    /// A page of cases was read; called before its first `visit`, so a
    /// visitor can prefetch what its cases need concurrently.
    async fn begin_page(&mut self, _cases: &[Case]) {}

    /// Handle one case: push its records to `st.report`, hold `st.tracker`
    /// for any record that must be read again. `ahead`: the cases after it
    /// on the page (some may be skipped as already handled), for a visitor
    /// that works on several at once.
    async fn visit(&mut self, case: &Case, ahead: &[Case], st: &mut ScanState);

    /// Every case of a page was visited (also before the scan stops): the
    /// moment to finish work collected from its cases.
    async fn end_page(&mut self, _st: &mut ScanState) {}
}

/// What the scan and its visitor share during a run.
pub struct ScanState {
    /// The lower bound of this run (the cursor, or the replay's start).
    pub since: Option<DateTime<Utc>>,
    pub tracker: CursorTracker,
    pub report: RunReport,
}

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
        let mut page_no = 1;
        // Cases already handled in this run, with the version handled.
        let mut seen: HashMap<String, Option<DateTime<Utc>>> = HashMap::new();
        loop {
            let page = match self
                .primero
                .list_cases_page(&(self.query)(from), page_no)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // Everything read so far still counts for the cursor.
                    st.report.aborted = Some(e.to_string());
                    return;
                }
            };
            // A page shorter than its total implies means rows went missing
            // on the way: stop, and keep the cursor where this page began.
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
                return;
            }
            let more = page.has_next();
            let newest = page.data.iter().filter_map(|c| c.last_updated_at).max();
            visitor.begin_page(&page.data).await;
            for (i, case) in page.data.iter().enumerate() {
                let ahead = &page.data[i + 1..];
                if self.stop.is_cancelled() {
                    tracing::info!("shutting down: scan stopped between cases");
                    st.report.stopped = true;
                    visitor.end_page(st).await;
                    return;
                }
                if seen.get(&case.id) == Some(&case.last_updated_at) {
                    continue;
                }
                seen.insert(case.id.clone(), case.last_updated_at);
                st.report.fetched += 1;
                st.tracker.saw(case.last_updated_at);
                let span = tracing::info_span!("case", case = %case.id);
                visitor.visit(case, ahead, st).instrument(span).await;
            }
            visitor.end_page(st).await;
            if !more {
                return;
            }
            match newest {
                Some(t) if from.is_none_or(|f| t > f) => {
                    from = Some(t);
                    page_no = 1;
                }
                // A whole page on one timestamp: step through it by number.
                _ => page_no += 1,
            }
        }
    }
}

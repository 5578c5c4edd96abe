//! A recorded run's record outcomes go to the state database while the run
//! goes, a chunk at a time, instead of all at its end; the run report keeps
//! the first [`KEPT_IN_FULL`] records in full and only counts the others
//! ([`crate::report::Tally`]). So a run's memory does not grow with its size
//! (issue 18 §4): what `bridge runs show` and the console list comes from
//! the database, which has every record.
//!
//! The flow pushes each finished record into the report
//! ([`RunReport::push`]); a recorded run's report hands it to a
//! [`RecordStream`], whose writer ([`write_records`]) runs beside the flow
//! and appends the rows in one transaction per chunk.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::ledger::Ledger;
use crate::report::RecordReport;
use bridge_store::{RecordRow, Store, StoreError};

/// Records a streamed run report keeps in full (what `bridge flow run`
/// prints line by line); the rest are counted, and listed by
/// `bridge runs show`.
pub const KEPT_IN_FULL: usize = 1_000;

/// Rows appended in one transaction at most.
pub const CHUNK: usize = 256;

/// Where a recorded run's report sends its records (cheap to clone).
#[derive(Clone)]
pub struct RecordStream {
    tx: mpsc::UnboundedSender<RecordReport>,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordStream")
    }
}

/// Two reports are equal whatever their streams.
impl PartialEq for RecordStream {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RecordStream {}

impl RecordStream {
    pub(crate) fn send(&self, record: &RecordReport) -> bool {
        self.tx.send(record.clone()).is_ok()
    }
}

/// The receiving end, for [`write_records`].
pub struct RecordRows {
    rx: mpsc::UnboundedReceiver<RecordReport>,
    /// Set once the flow returned: what is queued then is the last.
    done: Arc<Notify>,
}

/// A stream and its receiving end; `done` is told when the flow returned.
pub fn channel() -> (RecordStream, RecordRows, Arc<Notify>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let done = Arc::new(Notify::new());
    (
        RecordStream { tx },
        RecordRows {
            rx,
            done: done.clone(),
        },
        done,
    )
}

/// The state database's row of a finished record.
pub fn record_row(
    r: &RecordReport,
    (run_id, flow): (&str, &str),
    attempt: i64,
    at: &str,
) -> RecordRow {
    RecordRow {
        run_id: run_id.to_string(),
        flow: flow.to_string(),
        source_id: r.source_id.clone(),
        target_id: r.outcome.target_id().map(str::to_string),
        status: r.outcome.label().replace(' ', "-"),
        attempt,
        reason_code: r.outcome.reason_code().map(str::to_string),
        reason: r.outcome.reason().map(str::to_string),
        at: at.to_string(),
    }
}

/// Append the records a run streams, a chunk per transaction, until the
/// flow returned and the queue is empty; counts each in the metrics.
/// Returns how many were written, or the first failure (the later chunks
/// are still tried: a record row lost is only a line less in
/// `bridge runs show`).
pub async fn write_records(
    store: &dyn Store,
    (run_id, flow): (&str, &str),
    ledger: &Ledger<'_>,
    mut rows: RecordRows,
) -> Result<usize, StoreError> {
    let metrics = bridge_telemetry::metrics();
    let mut written = 0;
    let mut first_error = None;
    let mut finished = false;
    let mut chunk: Vec<RecordReport> = Vec::with_capacity(CHUNK);
    loop {
        if !finished {
            tokio::select! {
                biased;
                next = rows.rx.recv() => match next {
                    Some(r) => chunk.push(r),
                    None => finished = true,
                },
                _ = rows.done.notified() => finished = true,
            }
        }
        while chunk.len() < CHUNK {
            match rows.rx.try_recv() {
                Ok(r) => chunk.push(r),
                Err(_) => break,
            }
        }
        if chunk.is_empty() {
            if finished {
                break;
            }
            continue;
        }
        let at = bridge_store::now();
        let batch: Vec<RecordRow> = chunk
            .iter()
            .map(|r| record_row(r, (run_id, flow), ledger.attempt(&r.source_id), &at))
            .collect();
        for r in &chunk {
            metrics.record(flow, r.outcome.label());
        }
        chunk.clear();
        match store.record_outcomes_append(&batch).await {
            Ok(()) => written += batch.len(),
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "state database: record outcomes not written");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::DeliveryPolicy;
    use crate::report::{failed, RecordOutcome, RunReport, Slot};
    use bridge_store::SqliteStore;

    fn created(i: usize) -> RecordReport {
        RecordReport {
            source_id: format!("r{i}"),
            outcome: RecordOutcome::Created {
                case_id: format!("c{i}"),
            },
            acknowledged: false,
            ack_error: None,
            would_acknowledge: None,
        }
    }

    #[tokio::test]
    async fn a_streamed_run_keeps_a_thousand_records_counts_the_rest_and_writes_all() {
        let store = SqliteStore::in_memory().await.unwrap();
        let ledger = Ledger::load(&store, "f", DeliveryPolicy::default(), None)
            .await
            .unwrap();
        let (stream, rows, done) = channel();
        let n = KEPT_IN_FULL + 500;
        let flow = async {
            let mut report = RunReport {
                flow: "f".into(),
                run_id: "run1".into(),
                ..RunReport::default()
            };
            report.stream_to(Some(stream));
            let mut slots = Vec::new();
            for i in 0..n {
                let mut record = created(i);
                if i % 100 == 7 {
                    record.outcome = failed("partner-unavailable", "503");
                }
                slots.push(report.push(record));
                // Give the writer a turn now and then, as a flow's awaits do.
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            // One put in directly, not through `push`: streamed all the same.
            report.records.push(created(n));
            for (i, slot) in slots.iter().enumerate() {
                let answer = if i == n - 1 {
                    Err("refused".to_string())
                } else {
                    Ok(())
                };
                report.acknowledge(*slot, answer);
            }
            report.end_stream();
            done.notify_one();
            (report, slots)
        };
        let writer = write_records(&store, ("run1", "f"), &ledger, rows);
        let ((report, slots), written) = tokio::join!(flow, writer);
        assert_eq!(written.unwrap(), n + 1);
        assert_eq!(slots[0], Slot::Kept(0));
        assert_eq!(slots[KEPT_IN_FULL], Slot::Counted);
        assert_eq!(report.records.len(), KEPT_IN_FULL + 1);
        assert_eq!(report.total(), n + 1);
        let failures = (0..n).filter(|i| i % 100 == 7).count();
        assert_eq!(report.count("failed"), failures);
        assert_eq!(report.count("created"), n + 1 - failures);
        assert_eq!(report.delivered(), n + 1 - failures);
        assert_eq!(report.acknowledged(), n - 1);
        assert_eq!(report.beyond.ack_failed, 1);
        assert!(!report.all_through());
        // Every record is in the state database, the direct one too.
        let stored = store.run_records("run1").await.unwrap();
        assert_eq!(stored.len(), n + 1);
        assert_eq!(
            stored.iter().filter(|r| r.status == "failed").count(),
            failures
        );
        assert!(stored.iter().any(|r| r.source_id == format!("r{n}")));
        // The report says there is more than it lists.
        assert!(
            report.to_string().contains("bridge runs show run1"),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_report_not_streamed_keeps_every_record() {
        let mut report = RunReport::default();
        for i in 0..KEPT_IN_FULL + 10 {
            assert_eq!(report.push(created(i)), Slot::Kept(i));
        }
        assert_eq!(report.records.len(), KEPT_IN_FULL + 10);
        assert!(report.beyond.is_empty());
    }
}

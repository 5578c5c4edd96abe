//! Host bindings generated from `wit/job.wit`, and the host side of the `log`
//! import: the only capability a job gets.

use std::time::Instant;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::job_text::{self, RecordTerms, MAX_LOG_LINES_PER_RECORD};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "job",
    exports: { default: async },
});

pub use self::bridge::job::log::Level;

/// The optional export of world `batch-job` (wit/job.wit).
pub const RUN_BATCH_EXPORT: &str = "run-batch";

/// Log field a job adds inside `run-batch`: the position of the record being
/// mapped, which the host turns back into its record id (jobs/lib/job.js).
pub const BATCH_INDEX_FIELD: &str = "batch_index";
pub use self::bridge::job::types::{FieldError, UnmappedValue};

/// Per-store state: limits, deadline, and where job logs go.
pub struct HostState {
    pub(crate) job: String,
    pub(crate) record_id: String,
    /// Record ids of the `run-batch` call in progress, in order.
    pub(crate) batch_ids: Vec<String>,
    pub(crate) limits: MemoryGuard,
    pub(crate) deadline: Option<Instant>,
    /// The records of the call in progress, to redact from its log lines.
    inputs: Vec<String>,
    /// Their terms, computed at the first log line of the call.
    terms: Option<RecordTerms>,
    /// Log lines the call may still write, and how many it wrote beyond.
    log_budget: u32,
    log_dropped: u32,
}

impl HostState {
    pub(crate) fn new(job: &str, memory_bytes: usize) -> Self {
        Self {
            job: job.to_string(),
            record_id: String::new(),
            batch_ids: Vec::new(),
            limits: MemoryGuard::new(memory_bytes),
            deadline: None,
            inputs: Vec::new(),
            terms: None,
            log_budget: MAX_LOG_LINES_PER_RECORD,
            log_dropped: 0,
        }
    }

    /// A call into the job begins: its records (none for `describe` and
    /// `configure`) and a log budget of [`MAX_LOG_LINES_PER_RECORD`] each.
    pub(crate) fn begin_call(&mut self, records: &[&str]) {
        self.inputs = records.iter().map(|r| r.to_string()).collect();
        self.terms = None;
        self.log_budget = MAX_LOG_LINES_PER_RECORD.saturating_mul(records.len().max(1) as u32);
        self.log_dropped = 0;
    }

    /// The call ended: report the log lines it wrote beyond its budget.
    pub(crate) fn end_call(&mut self) {
        if self.log_dropped > 0 {
            let records = self.inputs.len().max(1);
            bridge_telemetry::metrics().job_log_lines_dropped(&self.job, self.log_dropped);
            tracing::warn!(
                job = %self.job,
                record = %self.call_record(),
                records,
                dropped = self.log_dropped,
                "job log lines beyond {MAX_LOG_LINES_PER_RECORD} a record were dropped"
            );
        }
        self.log_dropped = 0;
        self.inputs.clear();
        self.terms = None;
    }

    /// The record of a one-record call, or the first of a batch.
    fn call_record(&self) -> &str {
        if self.record_id.is_empty() {
            self.batch_ids.first().map(String::as_str).unwrap_or("")
        } else {
            &self.record_id
        }
    }
}

/// Memory cap for one store. Wraps `StoreLimits` to remember that the cap was
/// hit, so a failed call can be reported as "memory limit" instead of a
/// generic trap.
pub struct MemoryGuard {
    inner: StoreLimits,
    pub(crate) limit: usize,
    pub(crate) hit: bool,
}

impl MemoryGuard {
    fn new(limit: usize) -> Self {
        Self {
            inner: StoreLimitsBuilder::new()
                .memory_size(limit)
                .trap_on_grow_failure(true)
                .build(),
            limit,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
}

impl self::bridge::job::types::Host for HostState {}

impl HostState {
    /// The id of the record a job log line is about: within `run-batch`,
    /// the one at the position the job names (that field is taken out).
    fn logging_record(&self, fields: &mut Vec<(String, String)>) -> String {
        let at = fields.iter().position(|(k, _)| k == BATCH_INDEX_FIELD);
        let Some(at) = at else {
            return self.record_id.clone();
        };
        let (_, index) = fields.remove(at);
        index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.batch_ids.get(i))
            .cloned()
            .unwrap_or_else(|| self.record_id.clone())
    }
}

/// Fields of one job log line the host looks at; the rest are dropped.
const MAX_LOG_FIELDS: usize = 16;

impl self::bridge::job::log::Host for HostState {
    fn emit(&mut self, level: Level, message: String, mut fields: Vec<(String, String)>) {
        // Bounded per record, so a job logging in a loop cannot flood the log.
        if self.log_budget == 0 {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return;
        }
        self.log_budget -= 1;
        let record = self.logging_record(&mut fields);
        let inputs = &self.inputs;
        let terms = self
            .terms
            .get_or_insert_with(|| RecordTerms::of_records(inputs.iter().map(String::as_str)));
        // Keys: only those of `telemetry::ALLOWED_FIELDS` open to jobs are
        // kept. Message and values: codes the record does not hold (see
        // `job_text`), so no personal data or escape sequence reaches a log.
        let over = fields.len().saturating_sub(MAX_LOG_FIELDS);
        fields.truncate(MAX_LOG_FIELDS);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| {
                let v = job_text::code(&v, terms);
                (k, v)
            })
            .collect();
        let (kept, dropped) = bridge_telemetry::scrub_job_fields(&fields);
        let dropped = dropped + over;
        let message = job_text::text(&message, terms);
        match level {
            Level::Debug => {
                tracing::debug!(job = %self.job, record = %record, fields = %kept, dropped, "job: {message}")
            }
            Level::Info => {
                tracing::info!(job = %self.job, record = %record, fields = %kept, dropped, "job: {message}")
            }
            Level::Warn => {
                tracing::warn!(job = %self.job, record = %record, fields = %kept, dropped, "job: {message}")
            }
            Level::Error => {
                tracing::error!(job = %self.job, record = %record, fields = %kept, dropped, "job: {message}")
            }
        }
    }
}

/// Keep only keys a job may log (`telemetry::ALLOWED_FIELDS`); values are
/// cut to 100 characters.
pub fn scrub_fields(fields: &[(String, String)]) -> String {
    bridge_telemetry::scrub_job_fields(fields).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_inside_a_batch_names_the_record_at_its_position() {
        let mut state = HostState::new("job", 1 << 20);
        state.batch_ids = vec!["case-1".into(), "case-2".into()];
        let mut fields = vec![
            ("intervention_id".to_string(), "abc".to_string()),
            (BATCH_INDEX_FIELD.to_string(), "1".to_string()),
        ];
        assert_eq!(state.logging_record(&mut fields), "case-2");
        assert_eq!(
            fields,
            vec![("intervention_id".to_string(), "abc".to_string())]
        );
        // Outside a batch, or a position the batch does not have: the call's record.
        state.record_id = "one".into();
        state.batch_ids.clear();
        let mut fields = vec![(BATCH_INDEX_FIELD.to_string(), "0".to_string())];
        assert_eq!(state.logging_record(&mut fields), "one");
        assert!(fields.is_empty());
    }

    #[test]
    fn job_log_lines_are_bounded_per_record_and_the_rest_counted() {
        use self::bridge::job::log::Host as _;
        let mut state = HostState::new("job", 1 << 20);
        state.begin_call(&["{}", "{}"]);
        for _ in 0..(2 * MAX_LOG_LINES_PER_RECORD + 7) {
            state.emit(Level::Info, "line".into(), Vec::new());
        }
        assert_eq!(state.log_dropped, 7);
        state.end_call();
        assert_eq!(state.log_dropped, 0);
        // The next call has its own budget.
        state.begin_call(&["{}"]);
        state.emit(Level::Info, "line".into(), Vec::new());
        assert_eq!(
            (state.log_budget, state.log_dropped),
            (MAX_LOG_LINES_PER_RECORD - 1, 0)
        );
    }

    #[test]
    fn scrubber_drops_unknown_keys() {
        let fields = vec![
            ("intervention_id".to_string(), "abc".to_string()),
            ("name".to_string(), "Someone".to_string()),
        ];
        assert_eq!(scrub_fields(&fields), "intervention_id=abc");
    }
}

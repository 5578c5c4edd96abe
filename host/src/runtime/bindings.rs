//! Host bindings generated from `wit/job.wit`, and the host side of the `log`
//! import: the only capability a job gets.

use std::time::Instant;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    path: "../wit",
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
}

impl HostState {
    pub(crate) fn new(job: &str, memory_bytes: usize) -> Self {
        Self {
            job: job.to_string(),
            record_id: String::new(),
            batch_ids: Vec::new(),
            limits: MemoryGuard::new(memory_bytes),
            deadline: None,
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

impl self::bridge::job::log::Host for HostState {
    fn emit(&mut self, level: Level, message: String, mut fields: Vec<(String, String)>) {
        let record = self.logging_record(&mut fields);
        // Only keys of `telemetry::ALLOWED_FIELDS` open to jobs are kept, so a
        // job cannot leak personal data through `fields`.
        let (kept, dropped) = crate::telemetry::scrub_job_fields(&fields);
        // Job messages are bounded so a job cannot flood the log.
        let message: String = message.chars().take(200).collect();
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
    crate::telemetry::scrub_job_fields(fields).0
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
    fn scrubber_drops_unknown_keys() {
        let fields = vec![
            ("intervention_id".to_string(), "abc".to_string()),
            ("name".to_string(), "Someone".to_string()),
        ];
        assert_eq!(scrub_fields(&fields), "intervention_id=abc");
    }
}

//! A live job instance: one store, reused for every record of a run.
//!
//! Reusing the instance keeps the per-record cost at tens of microseconds. A
//! trap (timeout, memory cap, crash) leaves the instance in an unknown state,
//! so it is discarded and the next record gets a fresh one.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Func;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{Context, HostState, Job, JobError, JobInfo, Outcome};
use super::engine::LoadedJob;
use super::error::JobFailure;
use super::job_text::{self, RecordTerms};

/// Largest JSON a job may return for one record; beyond it the output is
/// refused rather than held in memory and forwarded to a partner.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// Most records in one `run-batch` call; a longer batch is cut into calls
/// of this size. Beyond ~8 a record gains nothing more (measured), while the
/// instance's memory grows with the records and answers a call holds (a
/// page of 1,000 Primero cases in one call grew WF 2.1's peak memory by a
/// quarter).
pub const MAX_RECORDS_PER_CALL: usize = 32;

/// The call context handed to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContext {
    pub flow: String,
    pub run_id: String,
    /// `YYYY-MM-DD`.
    pub today: String,
    pub dry_run: bool,
}

/// What a job decided for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Emit(serde_json::Value),
    Skip(String),
}

struct Live {
    store: Store<HostState>,
    bindings: Job,
    /// The `run-batch` export, when the component has one (wit/job.wit,
    /// world `batch-job`).
    run_batch: Option<Func>,
    /// Records mapped (see `Limits::recycle_after_calls`).
    calls: u32,
}

/// `run-batch`'s signature, checked when the function is called.
type RunBatchParams<'a> = (&'a Context, &'a [&'a str]);
type RunBatchResults = (Vec<Result<Outcome, JobError>>,);

pub struct JobInstance {
    job: Arc<LoadedJob>,
    live: Option<Live>,
    pub(crate) mappings: Option<Arc<String>>,
    /// The mapping version the instance was configured with (the run's one
    /// mapping version: its tables, its sharing declaration, its consent policy).
    mapping_set: Option<Arc<bridge_mappings::MappingSet>>,
    /// Wasm instances created so far (1 + replacements after a trap or recycling).
    started: u32,
}

impl JobInstance {
    /// Instantiate from the job's `InstancePre`.
    pub async fn new(job: Arc<LoadedJob>) -> Result<Self, JobFailure> {
        let live = instantiate(&job).await?;
        Ok(Self {
            job,
            live: Some(live),
            mappings: None,
            mapping_set: None,
            started: 1,
        })
    }

    /// Wasm instances created so far: 1, plus one per replacement after a
    /// trap or after `Limits::recycle_after_calls` records.
    pub fn instances_started(&self) -> u32 {
        self.started
    }

    /// The job version this instance runs: a record in flight finishes on it
    /// even when a newer version is swapped in meanwhile.
    pub fn job(&self) -> &Arc<LoadedJob> {
        &self.job
    }

    /// The mapping set this instance was configured with by the catalog
    /// (`None` for an instance configured with bare JSON).
    pub fn mapping_set(&self) -> Option<&Arc<bridge_mappings::MappingSet>> {
        self.mapping_set.as_ref()
    }

    /// The consent policy of the instance's mapping set: its `sharing.toml`
    /// `[consent]`, else the defaults.
    pub fn consent_policy(&self) -> bridge_mappings::ConsentPolicy {
        self.mapping_set
            .as_ref()
            .and_then(|m| m.sharing.as_ref())
            .map(|s| s.consent.clone())
            .unwrap_or_default()
    }

    /// Configure with a loaded mapping set, and keep it for the run.
    pub async fn configure_with(
        &mut self,
        set: Arc<bridge_mappings::MappingSet>,
    ) -> Result<(), JobFailure> {
        let result = self.configure(set.job_json()).await;
        self.mapping_set = Some(set);
        result
    }

    pub(crate) async fn describe(job: &LoadedJob) -> Result<JobInfo, JobFailure> {
        let mut live = instantiate(job).await?;
        arm(&mut live.store, job, "describe");
        live.store.data_mut().begin_call(&[]);
        let result = live.bindings.call_describe(&mut live.store).await;
        live.store.data_mut().end_call();
        result.map_err(|e| classify_trap(job, &live.store, e))
    }

    /// Hand the mapping tables to the job. Kept so that a replacement
    /// instance (after a trap) is configured the same way.
    pub async fn configure(&mut self, mappings: Arc<String>) -> Result<(), JobFailure> {
        self.mappings = Some(mappings.clone());
        let job = self.job.clone();
        let live = self.live().await?;
        arm(&mut live.store, &job, "configure");
        live.store.data_mut().begin_call(&[]);
        let result = live
            .bindings
            .call_configure(&mut live.store, &mappings)
            .await;
        live.store.data_mut().end_call();
        match result {
            // The mappings hold no personal data: codes only, no record.
            Ok(Err(e)) => Err(received_error(job.name.clone(), e, &RecordTerms::default())),
            Ok(Ok(())) => Ok(()),
            Err(e) => {
                let failure = classify_trap(&job, &live.store, e);
                self.live = None;
                Err(failure)
            }
        }
    }

    /// Map one record. Errors name the job; the caller adds the record id.
    pub async fn run(
        &mut self,
        ctx: &JobContext,
        record_id: &str,
        record: &str,
    ) -> Result<JobOutcome, JobFailure> {
        let job = self.job.clone();
        let live = self.configured_live().await?;
        record_id.clone_into(&mut live.store.data_mut().record_id);
        arm(&mut live.store, &job, "run");
        live.store.data_mut().begin_call(&[record]);
        let started = Instant::now();
        let result = live
            .bindings
            // The generated binding takes `&String`.
            .call_run(&mut live.store, &wit_context(ctx), &record.to_string())
            .await;
        bridge_telemetry::metrics().job_call(&job.name, started.elapsed().as_secs_f64());
        live.store.data_mut().end_call();
        live.calls += 1;
        let outcome = match result {
            Ok(result) => job_outcome(&job, result, record),
            Err(e) => {
                let failure = classify_trap(&job, &live.store, e);
                self.live = None;
                return Err(failure);
            }
        };
        self.recycle_if_worn_out();
        outcome
    }

    /// Map several records (`(record id, record JSON)`) under one context:
    /// one result per record, in order, each what [`run`](Self::run) returns
    /// for it. A job built with jobs/lib maps them in one call into the
    /// component (its `run-batch` export), which spares each record the
    /// call's fixed cost; other components get one call per record.
    ///
    /// Calls hold at most [`MAX_RECORDS_PER_CALL`] records. A trap (timeout,
    /// memory cap, crash) fails the whole call, so that call's records are
    /// then mapped one at a time on a fresh instance:
    /// only the record that trapped fails, under the per-call limits. The
    /// batch as a whole gets one record's time budget; a batch that needs
    /// more is finished the same way, one record at a time.
    pub async fn run_batch(
        &mut self,
        ctx: &JobContext,
        items: &[(&str, &str)],
    ) -> Vec<Result<JobOutcome, JobFailure>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_RECORDS_PER_CALL) {
            match self.try_batch(ctx, chunk).await {
                Some(answers) => results.extend(answers),
                None => {
                    for (id, record) in chunk {
                        results.push(self.run(ctx, id, record).await);
                    }
                }
            }
        }
        results
    }

    /// One `run-batch` call, or `None` when the records must go one at a
    /// time: no such export, fewer than two records, or the call trapped.
    async fn try_batch(
        &mut self,
        ctx: &JobContext,
        items: &[(&str, &str)],
    ) -> Option<Vec<Result<JobOutcome, JobFailure>>> {
        if items.len() < 2 {
            return None;
        }
        let job = self.job.clone();
        let live = match self.configured_live().await {
            Ok(live) => live,
            // Each record reports the failure on its own.
            Err(_) => return None,
        };
        let func = live.run_batch?;
        let typed = func
            .typed::<RunBatchParams<'_>, RunBatchResults>(&live.store)
            .ok()?;
        let data = live.store.data_mut();
        data.record_id.clear();
        data.batch_ids = items.iter().map(|(id, _)| id.to_string()).collect();
        arm(&mut live.store, &job, "run-batch");
        let records: Vec<&str> = items.iter().map(|(_, r)| *r).collect();
        live.store.data_mut().begin_call(&records);
        let started = Instant::now();
        let result = typed
            .call_async(&mut live.store, (&wit_context(ctx), &records))
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        live.store.data_mut().end_call();
        live.store.data_mut().batch_ids.clear();
        let results = match result {
            Ok((results,)) => results,
            Err(e) => {
                let failure = classify_trap(&job, &live.store, e);
                tracing::warn!(job = %job.name, records = items.len(), error = %failure,
                    "batch call trapped; mapping its records one at a time");
                self.live = None;
                return None;
            }
        };
        bridge_telemetry::metrics().job_batch_call(&job.name, elapsed, items.len());
        live.calls = live.calls.saturating_add(items.len() as u32);
        let outcomes = if results.len() == items.len() {
            results
                .into_iter()
                .zip(items)
                .map(|(r, (_, record))| job_outcome(&job, r, record))
                .collect()
        } else {
            let reason = format!(
                "run-batch returned {} results for {} records",
                results.len(),
                items.len()
            );
            items
                .iter()
                .map(|_| {
                    Err(JobFailure::InvalidOutput {
                        job: job.name.clone(),
                        reason: reason.clone(),
                    })
                })
                .collect()
        };
        self.recycle_if_worn_out();
        Some(outcomes)
    }

    /// The live instance, instantiated and configured again when a trap or
    /// recycling discarded the previous one.
    async fn configured_live(&mut self) -> Result<&mut Live, JobFailure> {
        if self.live.is_none() {
            self.live = Some(instantiate(&self.job).await?);
            self.started += 1;
            if let Some(m) = self.mappings.clone() {
                self.configure(m).await?;
            }
        }
        self.live().await
    }

    /// After `Limits::recycle_after_calls` records the next call gets a
    /// fresh instance, configured the same way.
    fn recycle_if_worn_out(&mut self) {
        let recycle = self.job.limits.recycle_after_calls;
        if recycle > 0 && self.live.as_ref().is_some_and(|l| l.calls >= recycle) {
            self.live = None;
        }
    }

    async fn live(&mut self) -> Result<&mut Live, JobFailure> {
        if self.live.is_none() {
            self.live = Some(instantiate(&self.job).await?);
            self.started += 1;
        }
        Ok(self.live.as_mut().expect("instantiated above"))
    }
}

async fn instantiate(job: &LoadedJob) -> Result<Live, JobFailure> {
    let mut store = Store::new(
        job.pre.engine(),
        HostState::new(&job.name, job.limits.memory_bytes),
    );
    store.limiter(|s| &mut s.limits);
    // Each epoch tick: trap once past the deadline, else yield to the executor
    // so a busy job never starves other tasks on this thread.
    store.epoch_deadline_callback(|ctx| {
        let past = ctx.data().deadline.is_some_and(|d| Instant::now() >= d);
        Ok(if past {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    arm(&mut store, job, "instantiate");
    let instance = job
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| classify_trap(job, &store, e))?;
    let bindings = job
        .indices
        .load(&mut store, &instance)
        .map_err(|e| classify_trap(job, &store, e))?;
    let run_batch = job
        .run_batch
        .as_ref()
        .and_then(|index| instance.get_func(&mut store, index));
    Ok(Live {
        store,
        bindings,
        run_batch,
        calls: 0,
    })
}

fn wit_context(ctx: &JobContext) -> Context {
    Context {
        flow: ctx.flow.clone(),
        run_id: ctx.run_id.clone(),
        today: ctx.today.clone(),
        dry_run: ctx.dry_run,
    }
}

/// A record's result as the job returned it, checked; its texts made safe
/// to store and log against the record the job was given (`job_text`).
fn job_outcome(
    job: &LoadedJob,
    result: Result<Outcome, JobError>,
    record: &str,
) -> Result<JobOutcome, JobFailure> {
    match result {
        Ok(Outcome::Emit(json)) if json.len() > MAX_OUTPUT_BYTES => {
            Err(JobFailure::InvalidOutput {
                job: job.name.clone(),
                reason: format!(
                    "output of {} bytes exceeds the {} byte limit",
                    json.len(),
                    MAX_OUTPUT_BYTES
                ),
            })
        }
        Ok(Outcome::Emit(json)) => {
            serde_json::from_slice(&json)
                .map(JobOutcome::Emit)
                .map_err(|e| JobFailure::InvalidOutput {
                    job: job.name.clone(),
                    reason: e.to_string(),
                })
        }
        Ok(Outcome::Skip(reason)) => Ok(received_skip(&reason, &RecordTerms::of_record(record))),
        Err(e) => Err(received_error(
            job.name.clone(),
            e,
            &RecordTerms::of_record(record),
        )),
    }
}

/// Reset the per-call deadline and memory flag.
fn arm(store: &mut Store<HostState>, job: &LoadedJob, _what: &str) {
    let data = store.data_mut();
    data.deadline = Some(Instant::now() + job.limits.call_timeout);
    data.limits.hit = false;
    store.set_epoch_deadline(1);
}

/// A job's skip, its reason reduced to codes the record does not hold.
fn received_skip(reason: &str, terms: &RecordTerms) -> JobOutcome {
    JobOutcome::Skip(job_text::text(reason, terms))
}

/// A job's error, its texts reduced to codes the record does not hold.
fn received_error(name: String, e: JobError, terms: &RecordTerms) -> JobFailure {
    match e {
        JobError::BadInput(f) => JobFailure::BadInput {
            job: name,
            field: job_text::code(&f.field, terms),
            reason: job_text::text(&f.reason, terms),
        },
        JobError::Unmapped(u) => JobFailure::Unmapped {
            job: name,
            table: job_text::code(&u.table, terms),
            value: job_text::lookup_value(&u.value, terms),
        },
        JobError::Fatal(message) => JobFailure::Fatal {
            job: name,
            message: job_text::text(&message, terms),
        },
    }
}

fn classify_trap(job: &LoadedJob, store: &Store<HostState>, e: wasmtime::Error) -> JobFailure {
    let name = job.name.clone();
    if store.data().limits.hit {
        return JobFailure::MemoryLimit {
            job: name,
            limit: store.data().limits.limit,
        };
    }
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return JobFailure::Timeout {
            job: name,
            after: job.limits.call_timeout,
        };
    }
    // The first line of the error chain is enough and carries no data.
    let reason = format!("{e}");
    JobFailure::Trap {
        job: name,
        reason: reason
            .lines()
            .next()
            .unwrap_or("trap")
            .chars()
            .take(300)
            .collect(),
    }
}

/// A job's own outcome (a fixture's `expected.json`, as the job returns it
/// and its JavaScript tests check it) as the host receives it for `record`:
/// with the host's rules for job text applied (`job_text`: texts reduced to
/// codes, values the record holds redacted). Emitted payloads are unchanged.
pub fn as_received(expected: &serde_json::Value, record: &str) -> serde_json::Value {
    use super::bindings::{FieldError, UnmappedValue};
    let terms = RecordTerms::of_record(record);
    let text = |key: &str| {
        expected
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let error = match (text("outcome").as_deref(), text("kind").as_deref()) {
        (Some("skip"), _) => {
            return match text("reason") {
                Some(reason) => outcome_report(&Ok(received_skip(&reason, &terms))),
                None => expected.clone(),
            }
        }
        (Some("error"), Some("bad-input")) => text("field")
            .zip(text("reason"))
            .map(|(field, reason)| JobError::BadInput(FieldError { field, reason })),
        (Some("error"), Some("unmapped")) => text("table")
            .zip(text("value"))
            .map(|(table, value)| JobError::Unmapped(UnmappedValue { table, value })),
        (Some("error"), Some("fatal")) => text("message").map(JobError::Fatal),
        _ => None,
    };
    match error {
        // The job's name is not part of the fixture form.
        Some(e) => outcome_report(&Err(received_error(String::new(), e, &terms))),
        None => expected.clone(),
    }
}

/// The fixture form of a job result, as `bridge job run` prints it and
/// `--expect` files hold it.
pub fn outcome_report(result: &Result<JobOutcome, JobFailure>) -> serde_json::Value {
    use serde_json::json;
    match result {
        Ok(JobOutcome::Emit(payload)) => json!({"outcome": "emit", "payload": payload}),
        Ok(JobOutcome::Skip(reason)) => json!({"outcome": "skip", "reason": reason}),
        Err(JobFailure::BadInput { field, reason, .. }) => {
            json!({"outcome": "error", "kind": "bad-input", "field": field, "reason": reason})
        }
        Err(JobFailure::Unmapped { table, value, .. }) => {
            json!({"outcome": "error", "kind": "unmapped", "table": table, "value": value})
        }
        Err(JobFailure::Fatal { message, .. }) => {
            json!({"outcome": "error", "kind": "fatal", "message": message})
        }
        Err(other) => {
            json!({"outcome": "error", "kind": other.code(), "message": other.to_string()})
        }
    }
}

//! A run's pool of job instances: the records of one run mapped on several
//! instances at once, one per core by default (`Limits::pool_size`,
//! `[jobs] pool_size`).
//!
//! A component instance is cheap (a store of its own, instantiated from the
//! job's `InstancePre` in microseconds and configured in about a
//! millisecond), and nothing in a store is shared with another, so each
//! instance maps on a thread of its own, in parallel with the others, under
//! its own time and memory limits. The threads are the pool's, not the async
//! runtime's: mapping is pure computation and leaves the runtime's workers
//! free for the partner calls.
//!
//! Every instance of a pool is made from the one job version and the one
//! mapping version the run started with (the instance the pool is started
//! with), so a hot-swapped job or mapping set takes effect at the next run,
//! and a run never mixes versions. Each record's answer goes back to its own
//! caller, so a flow's record order and outcomes are those of one instance.
//!
//! Workers and instances start when there is work for them, not before: a
//! run of one record uses the instance it was started with and one thread.
//! A worker that finds records queued while every other worker is busy maps
//! them together in one `run-batch` call (up to the pool's batch size), which
//! spares each record the call's fixed cost; while another worker is free to
//! take them, it leaves them to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::engine::LoadedJob;
use super::error::JobFailure;
use super::instance::{JobContext, JobInstance, JobOutcome};

type Answer = Result<JobOutcome, JobFailure>;

/// Records handed to the pool together, answered together.
struct Work {
    items: Vec<(String, String)>,
    reply: oneshot::Sender<Vec<Answer>>,
    /// The submitter's span: a worker mapping this work alone logs in it.
    span: tracing::Span,
}

/// The queue and the workers' state, under one lock.
#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// Workers started, those of them waiting for work, and those mapping.
    workers: usize,
    waiting: usize,
    busy: usize,
    /// The pool's handle is gone: workers leave once the queue is empty.
    closed: bool,
}

/// What the pool's workers share.
struct Shared {
    job: Arc<LoadedJob>,
    /// How the pool's first instance was configured: the others are
    /// configured the same way (the run's one mapping version).
    mappings: Option<Arc<String>>,
    mapping_set: Option<Arc<bridge_mappings::MappingSet>>,
    ctx: JobContext,
    max_batch: usize,
    size: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Configured instances no worker is using.
    idle: Mutex<Vec<JobInstance>>,
    calls: AtomicU64,
    instances: AtomicU32,
    /// The run's span, for work of several submitters mapped in one call.
    span: tracing::Span,
}

/// The job instances of one run (see the module documentation).
pub struct JobPool {
    shared: Arc<Shared>,
}

impl JobPool {
    /// A pool of `instance.job()`'s `Limits::pool_size` instances for one
    /// run, starting with `instance` (configured: the others are configured
    /// the same way). `max_batch`: most records a worker maps in one call.
    pub fn start(instance: JobInstance, ctx: JobContext, max_batch: usize) -> Self {
        let size = instance.job().limits.pool_size;
        Self::with_size(instance, ctx, size, max_batch)
    }

    /// [`start`](Self::start) with `size` instances at most (at least 1).
    pub fn with_size(
        instance: JobInstance,
        ctx: JobContext,
        size: usize,
        max_batch: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            job: instance.job().clone(),
            mappings: instance.mappings.clone(),
            mapping_set: instance.mapping_set().cloned(),
            ctx,
            max_batch: max_batch.max(1),
            size: size.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            idle: Mutex::new(vec![instance]),
            calls: AtomicU64::new(0),
            instances: AtomicU32::new(1),
            span: tracing::Span::current(),
        });
        Self { shared }
    }

    /// The job version every instance of the pool runs.
    pub fn job(&self) -> &Arc<LoadedJob> {
        &self.shared.job
    }

    /// Most instances (and threads) the pool uses.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// Calls into the job so far (a batch counts once).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Instances the pool has made so far, the one it started with included
    /// (an instance's replacements after a trap or recycling not counted).
    pub fn instances(&self) -> u32 {
        self.shared.instances.load(Ordering::Relaxed)
    }

    /// Map one record: alone, or in one call with records queued with it.
    pub async fn run(&self, id: &str, record: String) -> Answer {
        let mut answers = self
            .answers(1, self.send(vec![(id.to_string(), record)]))
            .await;
        answers.pop().unwrap_or_else(|| Err(self.stopped()))
    }

    /// Map `items` (`(record id, record JSON)`): one answer per record, in
    /// order. The records are shared out in contiguous parts between the
    /// pool's instances, which map them at once.
    pub async fn run_batch(&self, items: Vec<(String, String)>) -> Vec<Answer> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        let per_part = n.div_ceil(self.shared.size.min(n));
        let mut items = items.into_iter();
        let mut pending = Vec::new();
        loop {
            let part: Vec<_> = items.by_ref().take(per_part).collect();
            if part.is_empty() {
                break;
            }
            pending.push((part.len(), self.send(part)));
        }
        let mut answers = Vec::with_capacity(n);
        for (len, answer) in pending {
            answers.extend(self.answers(len, answer).await);
        }
        answers
    }

    async fn answers(&self, len: usize, answer: oneshot::Receiver<Vec<Answer>>) -> Vec<Answer> {
        match answer.await {
            Ok(answers) if answers.len() == len => answers,
            _ => (0..len).map(|_| Err(self.stopped())).collect(),
        }
    }

    /// Queue `items`; wake a waiting worker, or start one when none waits
    /// and the pool has room.
    fn send(&self, items: Vec<(String, String)>) -> oneshot::Receiver<Vec<Answer>> {
        let (reply, answer) = oneshot::channel();
        let queued = Work {
            items,
            reply,
            span: tracing::Span::current(),
        };
        let shared = &self.shared;
        let mut queue = lock(&shared.queue);
        queue.work.push_back(queued);
        if queue.waiting > 0 {
            drop(queue);
            shared.wake.notify_one();
        } else if queue.workers < shared.size {
            queue.workers += 1;
            let number = queue.workers;
            drop(queue);
            let worker = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("bridge-job-{number}"))
                .spawn(move || work(&worker));
            if let Err(e) = spawned {
                // The workers already started map the queued records; with
                // none, the callers hear that no worker could.
                tracing::error!(job = %shared.job.name, error = %e, "cannot start a job worker thread");
                worker_gone(shared, false);
            }
        }
        answer
    }

    fn stopped(&self) -> JobFailure {
        JobFailure::Fatal {
            job: self.shared.job.name.clone(),
            message: "no job worker could map this record".into(),
        }
    }
}

impl Drop for JobPool {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
    }
}

/// A worker leaves the pool without asking for more work: it could not be
/// started, or it panicked (`busy`: while mapping). With no worker left, the
/// queued work is dropped, so its callers hear that no worker could map it
/// rather than wait for ever.
fn worker_gone(shared: &Shared, busy: bool) {
    let orphans = {
        let mut queue = lock(&shared.queue);
        queue.workers -= 1;
        if busy {
            queue.busy -= 1;
        }
        if queue.workers == 0 {
            std::mem::take(&mut queue.work)
        } else {
            VecDeque::new()
        }
    };
    drop(orphans);
}

/// Counts a worker out if it panics (see [`worker_gone`]).
struct PanicGuard<'a> {
    shared: &'a Shared,
    busy: bool,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            worker_gone(self.shared, self.busy);
        }
    }
}

/// A worker: map queued work until the pool is dropped and the queue empty.
fn work(shared: &Shared) {
    let mut guard = PanicGuard {
        shared,
        busy: false,
    };
    while let Some(batch) = next_batch(shared, guard.busy) {
        guard.busy = true;
        let span = match &batch[..] {
            [one] => one.span.clone(),
            _ => shared.span.clone(),
        };
        let _entered = span.enter();
        let items: Vec<(&str, &str)> = batch
            .iter()
            .flat_map(|w| w.items.iter().map(|(id, r)| (id.as_str(), r.as_str())))
            .collect();
        let mut answers = match take_instance(shared) {
            Ok(mut instance) => {
                let answers = futures::executor::block_on(instance.run_batch(&shared.ctx, &items));
                lock(&shared.idle).push(instance);
                answers
            }
            Err(failure) => items.iter().map(|_| Err(failure.clone())).collect(),
        };
        shared.calls.fetch_add(1, Ordering::Relaxed);
        if batch.len() > 1 {
            tracing::debug!(records = items.len(), "records mapped in one job call");
        }
        drop(items);
        // Each submitter gets its own records' answers (one that gave up no
        // longer listens).
        for w in batch.into_iter().rev() {
            let rest = answers.len().saturating_sub(w.items.len());
            let _ = w.reply.send(answers.split_off(rest));
        }
    }
}

/// The next work to map: the first queued, with the work queued behind it
/// when every other worker is busy mapping (up to the batch size). `None`
/// once the pool is gone and nothing is queued. `mapped`: this worker
/// finished mapping a batch since it last asked.
fn next_batch(shared: &Shared, mapped: bool) -> Option<Vec<Work>> {
    let mut queue = lock(&shared.queue);
    if mapped {
        queue.busy -= 1;
    }
    let first = loop {
        if let Some(first) = queue.work.pop_front() {
            break first;
        }
        if queue.closed {
            queue.workers -= 1;
            return None;
        }
        queue.waiting += 1;
        queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
        queue.waiting -= 1;
    };
    queue.busy += 1;
    let mut records = first.items.len();
    let mut batch = vec![first];
    // While another worker is free, about to start, or may still be
    // started, the rest is left to it.
    while queue.busy >= shared.size {
        match queue.work.front() {
            Some(next) if records + next.items.len() <= shared.max_batch => {
                records += next.items.len();
                batch.extend(queue.work.pop_front());
            }
            _ => break,
        }
    }
    Some(batch)
}

/// A configured instance: an idle one, else a new one like the first.
fn take_instance(shared: &Shared) -> Result<JobInstance, JobFailure> {
    if let Some(instance) = lock(&shared.idle).pop() {
        return Ok(instance);
    }
    shared.instances.fetch_add(1, Ordering::Relaxed);
    futures::executor::block_on(async {
        let mut instance = JobInstance::new(shared.job.clone()).await?;
        match (&shared.mapping_set, &shared.mappings) {
            (Some(set), _) => instance.configure_with(set.clone()).await?,
            (None, Some(json)) => instance.configure(json.clone()).await?,
            (None, None) => {}
        }
        Ok(instance)
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

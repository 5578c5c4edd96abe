//! One job instance shared by a run's concurrent records: it lives in a task
//! of its own and maps, in one `run-batch` call, every record that queued up
//! while it was busy.
//!
//! A record never waits for a batch to fill: when the task is idle the first
//! record to arrive is mapped at once, alone. Records arriving meanwhile wait
//! in the queue and go together in the next call. So batches form exactly
//! when records come faster than the job maps them, which is when the fixed
//! cost of a call into the component matters (wit/job.wit, world
//! `batch-job`). The task also takes the mapping off the task that drives
//! the run's partner calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::error::JobFailure;
use super::instance::{JobContext, JobInstance, JobOutcome};

type Answer = Result<JobOutcome, JobFailure>;

struct Queued {
    id: String,
    record: String,
    reply: oneshot::Sender<Answer>,
}

pub struct SharedInstance {
    job: String,
    queue: mpsc::UnboundedSender<Queued>,
    calls: Arc<AtomicU64>,
}

impl SharedInstance {
    /// Start the instance's task (in the current tracing span, so job logs
    /// keep the run's ids). `max_batch`: most records in one call. The task
    /// ends once this handle is dropped and the queue is empty.
    pub fn spawn(instance: JobInstance, ctx: JobContext, max_batch: usize) -> Self {
        let job = instance.job().name.clone();
        let (queue, queued) = mpsc::unbounded_channel();
        let calls = Arc::new(AtomicU64::new(0));
        let served = serve(instance, ctx, max_batch.max(1), queued, calls.clone());
        tokio::spawn(served.instrument(tracing::Span::current()));
        Self { job, queue, calls }
    }

    /// Calls into the job so far (a batch counts once).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Map one record, alone or in a batch with the records queued with it.
    pub async fn run(&self, id: &str, record: String) -> Answer {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            id: id.to_string(),
            record,
            reply,
        };
        if self.queue.send(queued).is_err() {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// The instance's task is gone: only when the runtime shuts down.
    fn stopped(&self) -> JobFailure {
        JobFailure::Fatal {
            job: self.job.clone(),
            message: "the job's task stopped before this record was mapped".into(),
        }
    }
}

async fn serve(
    mut instance: JobInstance,
    ctx: JobContext,
    max_batch: usize,
    mut queued: mpsc::UnboundedReceiver<Queued>,
    calls: Arc<AtomicU64>,
) {
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let items: Vec<(&str, &str)> = batch
            .iter()
            .map(|q| (q.id.as_str(), q.record.as_str()))
            .collect();
        let answers = instance.run_batch(&ctx, &items).await;
        calls.fetch_add(1, Ordering::Relaxed);
        if batch.len() > 1 {
            tracing::debug!(records = batch.len(), "records mapped in one job call");
        }
        for (q, answer) in batch.into_iter().zip(answers) {
            // A caller that gave up no longer listens.
            let _ = q.reply.send(answer);
        }
    }
}

//! Serving the inbox: the HTTP side accepts and stores, a worker processes
//! each stored message as soon as it arrives, and retries kept ones with a
//! growing delay. On shutdown the listener stops accepting, requests in
//! flight are answered, and the message being processed is finished.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use super::conn::{accept_loop, ConnectionLimits};
use super::http::{router, InboxState};
use super::processor::{Disposition, InboxProcessor};

/// Longest wait between attempts of a kept message.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// How long to wait before trying the store again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Delay before the first retry of a kept message; doubles per attempt.
    pub retry_delay: Duration,
    /// Today's date for the jobs; `None`: the machine's date at each pass.
    pub today: Option<String>,
    /// Connection cap and deadlines.
    pub limits: ConnectionLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            retry_delay: Duration::from_secs(30),
            today: None,
            limits: ConnectionLimits::default(),
        }
    }
}

/// Serve until `shutdown` completes, then drain and return.
pub async fn serve(
    listener: TcpListener,
    state: InboxState,
    processor: InboxProcessor,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = options.limits;
    let worker = tokio::spawn(work(processor, state.notifier(), stop_rx.clone(), options));
    // A worker that dies (a handler panicked) must not leave an inbox that
    // accepts messages nobody processes: stop serving and report it.
    let (ended_tx, ended_rx) = oneshot::channel::<bool>();
    let watcher = tokio::spawn(async move {
        let panicked = worker.await.is_err();
        let _ = ended_tx.send(panicked);
    });
    let (crashed_tx, crashed_rx) = oneshot::channel::<()>();
    let stopper = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {
                tracing::info!("inbox stopping: no new messages; finishing the one in flight");
            }
            ended = ended_rx => {
                if ended.unwrap_or(true) {
                    tracing::error!("inbox worker ended abnormally; stopping the inbox");
                    let _ = crashed_tx.send(());
                }
            }
        }
        let _ = stop_tx.send(true);
    });
    accept_loop(listener, router(state), limits, stop_rx).await;
    let _ = stopper.await;
    // The worker stops between messages; wait for the one in flight.
    let _ = watcher.await;
    if crashed_rx.await.is_ok() {
        return Err(std::io::Error::other("the inbox worker ended abnormally"));
    }
    Ok(())
}

/// Delay before attempt `attempts + 1` of a kept message.
fn backoff(base: Duration, failed_attempts: i64) -> Duration {
    let exp = failed_attempts.clamp(1, 20) as u32 - 1;
    base.saturating_mul(1u32 << exp.min(16))
        .min(MAX_RETRY_DELAY)
}

async fn work(
    processor: InboxProcessor,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    options: ServeOptions,
) {
    // Kept messages, by receipt id: not before this instant.
    let mut not_before: HashMap<String, Instant> = HashMap::new();
    loop {
        let mut wake_at = None;
        match processor.store.inbox_pending().await {
            Ok(pending) => {
                bridge_telemetry::metrics().set_inbox_pending(pending.len() as i64);
                let today = options
                    .today
                    .clone()
                    .unwrap_or_else(bridge_flows::app::today);
                not_before.retain(|id, _| pending.iter().any(|m| &m.id == id));
                for message in pending {
                    if *stop.borrow() {
                        return;
                    }
                    if not_before
                        .get(&message.id)
                        .is_some_and(|t| *t > Instant::now())
                    {
                        continue;
                    }
                    match processor.process_message(&message, &today).await {
                        Ok(outcome) => match outcome.disposition {
                            Disposition::Done { .. } | Disposition::DeadLettered { .. } => {
                                not_before.remove(&message.id);
                            }
                            Disposition::Kept { .. } | Disposition::Unreadable => {
                                let delay = backoff(options.retry_delay, message.attempts + 1);
                                not_before.insert(message.id.clone(), Instant::now() + delay);
                            }
                        },
                        Err(e) => {
                            tracing::error!(error = %e, "inbox store failed while processing");
                            wake_at = Some(Instant::now() + STORE_RETRY);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "inbox store failed listing messages");
                wake_at = Some(Instant::now() + STORE_RETRY);
            }
        }
        let wake_at = wake_at.or_else(|| not_before.values().min().copied());
        let until_due = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = until_due => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), Duration::from_secs(30));
        assert_eq!(backoff(base, 2), Duration::from_secs(60));
        assert_eq!(backoff(base, 3), Duration::from_secs(120));
        assert_eq!(backoff(base, 40), MAX_RETRY_DELAY);
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
    }
}

//! Serving the inbox: the HTTP side accepts and stores, a worker processes
//! each stored message as soon as it arrives, and retries kept ones with a
//! growing delay. On shutdown the listener stops accepting, requests in
//! flight are answered, and the message being processed is finished.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use super::conn::{accept_loop, ConnectionLimits};
use super::http::{router, InboxState};
use super::processor::InboxProcessor;

/// How long to wait before trying the store again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Today's date for the jobs; `None`: the machine's date at each pass.
    pub today: Option<String>,
    /// Connection cap and deadlines.
    pub limits: ConnectionLimits,
    /// How often the worker looks for messages it was not told about: kept
    /// ones whose backoff passed, and a crashed replica's whose claim expired.
    pub sweep: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            today: None,
            limits: ConnectionLimits::default(),
            sweep: Duration::from_secs(2),
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

async fn work(
    processor: InboxProcessor,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    options: ServeOptions,
) {
    loop {
        let mut wake_in = options.sweep;
        if let Ok(pending) = processor.store.inbox_pending().await {
            bridge_telemetry::metrics().set_inbox_pending(pending.len() as i64);
        }
        let today = options
            .today
            .clone()
            .unwrap_or_else(bridge_flows::app::today);
        // Claim and process until nothing is claimable: messages accepted
        // here, kept ones whose backoff passed, and those of a replica
        // whose claim expired.
        let go_on = || !*stop.borrow();
        if let Err(e) = processor.process_pending_while(&today, go_on).await {
            tracing::error!(error = %e, "inbox store failed while processing");
            wake_in = STORE_RETRY;
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wake_in) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::processor::backoff;
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), Duration::from_secs(30));
        assert_eq!(backoff(base, 2), Duration::from_secs(60));
        assert_eq!(backoff(base, 3), Duration::from_secs(120));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
    }
}

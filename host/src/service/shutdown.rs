//! Waiting for the signal to stop: SIGTERM (service managers) or Ctrl-C.

use std::future::Future;

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called (not when the future is first polled), so a signal that comes
/// while the service is still starting is not lost and does not kill the
/// process. Call it inside the runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = int.recv() => tracing::info!("interrupt received"),
                    }
                }
                (term, _) => {
                    if let Err(e) = term {
                        tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    }
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

//! The signals a running bridge answers. Every one a service manager or an
//! operator commonly sends is handled, so none kills the process on the spot
//! and leaves a run recorded as "running":
//!
//! | signal | what happens |
//! |---|---|
//! | SIGTERM, SIGINT (Ctrl-C), SIGQUIT | stop: no new runs, the runs in flight finish |
//! | SIGHUP | `bridge run`: reload the configuration and credentials (see [`Stop::Reload`]); elsewhere logged |
//! | SIGUSR1, SIGUSR2 | logged, nothing else |
//!
//! The handlers are installed when a waiting function is called (not when
//! its future is first polled), so a signal that comes while the service is
//! still starting is not lost; once installed, tokio keeps them for the
//! life of the process, so a signal between two waits is not fatal either.

use std::future::Future;
use std::path::PathBuf;

use crate::config::BridgeConfig;

/// Why the wait ended.
#[derive(Debug)]
pub enum Stop {
    /// Stop the process.
    Terminate,
    /// SIGHUP with a configuration that passed the start checks: finish the
    /// runs in flight, then start again with it (as read and checked: a
    /// later edit of the file cannot slip in unchecked).
    Reload(Box<BridgeConfig>),
}

/// Reads and checks a configuration file for a reload.
pub type ReloadCheck = fn(&std::path::Path) -> anyhow::Result<BridgeConfig>;

/// Completes on SIGTERM, SIGINT or SIGQUIT. SIGHUP, SIGUSR1 and SIGUSR2
/// are logged and otherwise ignored.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let wait = wait_for(None);
    async move {
        wait.await;
    }
}

/// As [`signal`], and SIGHUP re-reads `config`: when it passes `check`,
/// the wait ends with [`Stop::Reload`]; when it does not, the error is
/// logged and the service keeps its current configuration.
pub fn signal_or_reload(
    config: PathBuf,
    check: ReloadCheck,
) -> impl Future<Output = Stop> + Send + 'static {
    wait_for(Some((config, check)))
}

type Reloader = (PathBuf, ReloadCheck);

fn wait_for(reload: Option<Reloader>) -> impl Future<Output = Stop> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        );
        async move {
            let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) =
                streams
            else {
                tracing::warn!("cannot watch the process signals; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return Stop::Terminate;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM received: stopping"); return Stop::Terminate; }
                    _ = int.recv() => { tracing::info!("interrupt received: stopping"); return Stop::Terminate; }
                    _ = quit.recv() => { tracing::info!("SIGQUIT received: stopping"); return Stop::Terminate; }
                    _ = hup.recv() => match &reload {
                        Some((path, check)) => match check(path) {
                            Ok(config) => {
                                tracing::info!("SIGHUP received: configuration checked; reloading once the runs in flight finish");
                                return Stop::Reload(Box::new(config));
                            }
                            Err(e) => tracing::error!(
                                error = %format!("{e:#}"),
                                "SIGHUP received: the configuration does not pass its checks; keeping the current one"
                            ),
                        },
                        None => tracing::info!("SIGHUP received: nothing to reload here; ignored"),
                    },
                    _ = usr1.recv() => tracing::info!("SIGUSR1 received: ignored"),
                    _ = usr2.recv() => tracing::info!("SIGUSR2 received: ignored"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
        async move {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Terminate
        }
    }
}

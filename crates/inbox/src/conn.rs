//! The inbox's connections (issue 14 §3): HTTP/1.1 (and 1.0) only, at most
//! `max_connections` open at once, and no connection held without a
//! request making progress.
//!
//! Each connection is in one of three phases, and each has a deadline:
//! - waiting for a request (just opened, or a response sent on a kept-alive
//!   connection): closed after `idle_timeout` without a byte;
//! - reading a request header (its first byte arrived): closed when the
//!   header is not complete `header_timeout` after that byte;
//! - in a request (header complete): the handler bounds the body read with
//!   its own deadline and answers 408, so a message is never cut mid-store.
//!
//! A connection over the cap is answered 503 at once and closed, so the
//! process never runs out of file descriptors: `/healthz`, the store and
//! hot reload keep theirs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Default wait for a complete request header.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default silence allowed on a connection with no request in progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Highest default connection cap (DTP pushes a message at a time).
pub const MAX_DEFAULT_CONNECTIONS: usize = 256;
/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);
/// Least time between two warnings about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a connection over the cap is told before it is closed.
const OVER_CAP_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 69\r\n\r\n{\"error\":\"too-many-connections\",\"reason\":\"the inbox is at its limit\"}";

/// Limits on the inbox's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// From the first byte of a request to its complete header.
    pub header_timeout: Duration,
    /// Silence allowed while no request is in progress.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The process's soft open-file limit (`ulimit -n`), if known.
pub fn open_file_limit() -> Option<u64> {
    bridge_store::limits::open_files()
}

/// A quarter of the open-file limit, at most [`MAX_DEFAULT_CONNECTIONS`]:
/// the rest stays for the store, the partner clients and the metrics port.
pub fn default_max_connections() -> usize {
    match open_file_limit() {
        Some(n) => ((n / 4) as usize).clamp(1, MAX_DEFAULT_CONNECTIONS),
        None => MAX_DEFAULT_CONNECTIONS,
    }
}

/// Largest cap accepted in the configuration: half the open-file limit.
pub fn max_connections_allowed() -> Option<usize> {
    open_file_limit().map(|n| (n / 2).max(1) as usize)
}

/// Accept and serve connections until `stop` turns true, then finish the
/// requests in flight (each bounded by the deadlines) and return.
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut last_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE and the like: the connection stays queued; try again shortly.
                tracing::warn!(error = %e, "inbox could not accept a connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_over_cap(stream);
            // Once per period, not once per connection of a flood.
            if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                last_warned = Some(Instant::now());
                tracing::warn!(
                    cap = limits.max_connections,
                    "inbox connections refused: connection limit reached"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            serve_connection(stream, app, limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Answer 503 without reading the request and close. `try_write` never
/// waits: a fresh socket's send buffer takes the few bytes.
fn refuse_over_cap(stream: TcpStream) {
    bridge_telemetry::metrics().inbox_connection_closed("over-cap");
    let _ = stream.try_write(OVER_CAP_RESPONSE);
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = Tracked {
        app: TowerToHyperService::new(app),
        activity: activity.clone(),
    };
    let conn = http1::Builder::new()
        .keep_alive(true)
        // hyper's own header timer also runs while idle; ours tells the two apart.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "inbox connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                // Finish the request in progress, then close.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            phase = activity.expired(limits) => {
                tracing::debug!(phase, "inbox connection closed: deadline passed");
                bridge_telemetry::metrics().inbox_connection_closed(phase);
                return;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Waiting(Instant),
    Header(Instant),
    Request,
}

/// Where a connection is, shared by its socket and its service.
struct Activity(Mutex<Phase>);

impl Activity {
    fn new() -> Self {
        Self(Mutex::new(Phase::Waiting(Instant::now())))
    }

    fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn get(&self) -> Phase {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes_read(&self) {
        let mut phase = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Phase::Waiting(_) = *phase {
            *phase = Phase::Header(Instant::now());
        }
    }

    /// Completes when the current phase's deadline passes; names the phase.
    async fn expired(&self, limits: ConnectionLimits) -> &'static str {
        loop {
            let (deadline, name) = match self.get() {
                Phase::Waiting(since) => (since + limits.idle_timeout, "idle"),
                Phase::Header(since) => (since + limits.header_timeout, "header"),
                Phase::Request => {
                    // The handler bounds the body; look again later.
                    tokio::time::sleep(limits.header_timeout.min(limits.idle_timeout)).await;
                    continue;
                }
            };
            if Instant::now() >= deadline {
                return name;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The socket, noting the first byte of each request.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router, marking each request's start and end on the connection.
struct Tracked {
    app: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.set(Phase::Request);
        let answer = self.app.call(request);
        let activity = self.activity.clone();
        Box::pin(async move {
            let response = answer.await;
            // The response is being written: the next request has `idle_timeout`.
            activity.set(Phase::Waiting(Instant::now()));
            response
        })
    }
}

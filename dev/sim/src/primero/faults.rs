//! Fault injection (rules, the middleware applying them) and the fault
//! helpers the PING and DTP simulators share (hangups, truncation, in-flight count).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::PrimeroSim;
use super::wire::primero_error;

/// What an injected fault does to a matching request. The same shape is
/// used by the PING and DTP simulators (their `FaultKind`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer this status with a Primero error body (and `Retry-After`
    /// seconds), without processing the request.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer this status with this body verbatim (`application/json`), e.g.
    /// a malformed 200, without processing the request.
    Body { status: u16, body: String },
    /// Wait this long, then handle the request normally (longer than the
    /// client's timeout: a stalled answer).
    Delay(Duration),
    /// Close the connection without a complete answer; not processed.
    Hangup,
    /// Process the request, then close the connection without a complete
    /// answer (the client cannot know whether it was applied).
    HangupAfter,
    /// Process the request, then answer its status with the body cut in half
    /// (truncated JSON).
    Truncate,
    /// Case listing: answer page k with the rows of page k-1 (page 1 is
    /// served normally); the rows of page k are never seen.
    RepeatPage,
    /// Case listing: leave out the first `n` rows of the page; they are never seen.
    SkipRows(usize),
    /// `PATCH` of a case or a referral: answer 200 with the record as it is
    /// and change nothing (as Primero does for a referral already decided).
    NoopWrite,
    /// Expire every issued bearer token, then handle the request (a token
    /// expiring mid-run: the request is answered 401).
    ExpireTokens,
}

/// Called after a write has been applied, before its answer is sent.
pub type WriteHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A fault applied to the next `remaining` requests that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// HTTP method, or `None` for any.
    pub method: Option<String>,
    /// Matches when the request path starts with it (e.g. `/api/v2/cases`).
    pub path_prefix: String,
    pub fault: Fault,
    pub remaining: usize,
}

impl FaultRule {
    pub(super) fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m == "*" || m.eq_ignore_ascii_case(method))
            && path.starts_with(&self.path_prefix)
    }
}

pub(super) async fn inject_faults(
    State(sim): State<PrimeroSim>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let (latency, fault) = {
        let mut st = sim.lock();
        (st.latency, st.take_fault(req.method().as_str(), &path))
    };
    crate::latency::wait(latency).await;
    match fault {
        None => next.run(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::Hangup) => hangup_response(),
        Some(Fault::HangupAfter) => {
            let _ = next.run(req).await;
            hangup_response()
        }
        Some(Fault::Truncate) => truncate_response(next.run(req).await).await,
        Some(Fault::ExpireTokens) => {
            sim.lock().tokens.clear();
            next.run(req).await
        }
        Some(fault @ (Fault::RepeatPage | Fault::SkipRows(_) | Fault::NoopWrite)) => {
            let mut req = req;
            req.extensions_mut().insert(HandlerFault(fault));
            next.run(req).await
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = status.canonical_reason().unwrap_or("Error");
            let mut response = primero_error(status, &path, json!(message), None);
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Some(Fault::Body { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

/// A fault the handler applies itself (paging, no-op writes).
#[derive(Clone)]
pub(super) struct HandlerFault(pub(super) Fault);

/// A 200 whose body fails at once: the server closes the connection without
/// a complete answer, so the client sees a transport error.
pub(crate) fn hangup_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected hangup",
        ))
    });
    (StatusCode::OK, Body::from_stream(stream)).into_response()
}

/// The same answer with its body cut in half (a truncated JSON document).
pub(crate) async fn truncate_response(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

/// Requests being handled now, and the most ever at once.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// Leaves the count when dropped (also when the client goes away).
pub(crate) struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub(crate) fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self)
    }

    pub(crate) fn max_seen(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.max
            .store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

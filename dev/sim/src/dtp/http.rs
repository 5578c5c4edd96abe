//! The DTP simulator's routes: the three endpoints, and the edge middleware
//! (latency, injected faults, request log).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::config::{DtpEndpoint, SUBSCRIPTION_KEY_HEADER};
use super::server::TlsPeer;
use super::sim::{DtpReceived, DtpRequest, DtpSim, FaultKind};
use crate::primero::hangup_response;

impl DtpSim {
    /// The routes, without TLS (the TLS listener wraps them).
    pub(super) fn router(&self) -> Router {
        let mut router = Router::new();
        for endpoint in [
            DtpEndpoint::ReceiveIncomingReferral,
            DtpEndpoint::ReceiveDecisionOutgoingReferral,
            DtpEndpoint::Notification,
        ] {
            router = router.route(
                &self.inner.config.path(endpoint),
                post(
                    move |State(sim): State<DtpSim>,
                          ConnectInfo(peer): ConnectInfo<TlsPeer>,
                          headers: HeaderMap,
                          body: Bytes| async move {
                        sim.receive(endpoint, peer, &headers, &body)
                    },
                ),
            );
        }
        router
            .layer(middleware::from_fn_with_state(self.clone(), edge))
            .with_state(self.clone())
    }

    fn receive(
        &self,
        endpoint: DtpEndpoint,
        peer: TlsPeer,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let config = &self.inner.config;
        match headers
            .get(SUBSCRIPTION_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            None => return apim_error(
                StatusCode::UNAUTHORIZED,
                "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
            ),
            Some(key) if key != config.subscription_key => return apim_error(
                StatusCode::UNAUTHORIZED,
                "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
            ),
            Some(_) => {}
        }
        if let Some(pinned) = &config.pinned_thumbprint {
            if peer.client_thumbprint.as_deref() != Some(pinned.as_str()) {
                return apim_error(
                    StatusCode::FORBIDDEN,
                    "Client certificate thumbprint is not allowed.",
                );
            }
        }
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return apim_error(StatusCode::BAD_REQUEST, "Body is not JSON.");
        };
        let request_type = body.get("request_type").and_then(Value::as_str);
        let expected_ok = match endpoint {
            DtpEndpoint::Notification => matches!(request_type, None | Some("Feedback")),
            other => request_type == Some(other.name()),
        };
        if !body.is_object() || !expected_ok {
            return apim_error(
                StatusCode::BAD_REQUEST,
                &format!("request_type does not fit {}.", endpoint.name()),
            );
        }
        self.lock().received.push(DtpReceived {
            endpoint,
            body,
            client_thumbprint: peer.client_thumbprint,
        });
        (StatusCode::OK, Json(json!({}))).into_response()
    }
}

/// Latency, injected faults and the request log, for every path.
async fn edge(State(sim): State<DtpSim>, req: Request, next: Next) -> Response {
    let _in_flight = sim.inner.in_flight.enter();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (latency, fault) = {
        let mut st = sim.lock();
        st.arrivals.push(Instant::now());
        (st.latency, st.take_fault(&path))
    };
    crate::latency::wait(latency).await;
    let code =
        |status: u16| StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = match fault {
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => {
            let mut response = apim_error(code(status), "Injected fault");
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Some(FaultKind::Body { status, body }) => (
            code(status),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(FaultKind::Hangup) => hangup_response(),
        Some(FaultKind::HangupAfter) => {
            let _ = next.run(req).await;
            hangup_response()
        }
        None => next.run(req).await,
    };
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "DTP simulator answered");
    sim.lock().requests.push(DtpRequest {
        method,
        path,
        status,
    });
    response
}

fn apim_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "message": message})),
    )
        .into_response()
}

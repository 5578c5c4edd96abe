//! Serving the simulator: its router, the edge middleware (latency, injected
//! faults, request log) and the running server's handle.

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::{require_auth, token};
use super::check_status::check_status;
use super::config::PingSimConfig;
use super::faults::{FaultKind, HandlerFault};
use super::ingest::{ingest_async, ingest_sync};
use super::model::ReceivedRequest;
use super::retrieve::retrieve;
use super::state::PingSim;
use super::wire::{CHECK_STATUS_PATH, RETRIEVE_PATH, TOKEN_PATH};
use crate::primero::{hangup_response, truncate_response};

impl PingSim {
    /// Bind `addr` (use port 0 for any) and serve until the handle is dropped.
    pub async fn start(config: PingSimConfig, addr: SocketAddr) -> io::Result<RunningPingSim> {
        let sim = PingSim::new(config);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = sim.router();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "PING simulator stopped");
            }
        });
        tracing::debug!(%addr, "PING simulator listening");
        Ok(RunningPingSim {
            sim,
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The axum router (token endpoint, API endpoints, edge faults and logging).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route(RETRIEVE_PATH, post(retrieve))
            .route("/api/ingestion/v2/{partner_id}/data", post(ingest_sync))
            .route(
                "/api/ingestion/v2/{partner_id}/asyncdata",
                post(ingest_async),
            )
            .route(CHECK_STATUS_PATH, post(check_status))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_auth));
        Router::new()
            .route(TOKEN_PATH, post(token))
            .merge(api)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), edge))
            .with_state(self.clone())
    }
}

/// A simulator serving on a socket; stops when dropped. Derefs to [`PingSim`].
pub struct RunningPingSim {
    sim: PingSim,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningPingSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Token endpoint (served by the same listener).
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    pub fn sim(&self) -> &PingSim {
        &self.sim
    }

    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Deref for RunningPingSim {
    type Target = PingSim;
    fn deref(&self) -> &PingSim {
        &self.sim
    }
}

impl Drop for RunningPingSim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Latency, injected faults and the request log, for every path.
async fn edge(State(sim): State<PingSim>, mut req: Request, next: Next) -> Response {
    let _in_flight = sim.inner.in_flight.enter();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (latency, fault) = {
        let mut st = sim.lock();
        st.arrivals.push(Instant::now());
        (st.latency, st.take_fault(&path))
    };
    crate::latency::wait(latency).await;
    let response = match fault {
        Some(FaultKind::Body { status, body }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(FaultKind::Hangup) => hangup_response(),
        Some(FaultKind::HangupAfter) => {
            let _ = next.run(req).await;
            hangup_response()
        }
        Some(FaultKind::Truncate) => truncate_response(next.run(req).await).await,
        Some(FaultKind::ExpireTokens) => {
            sim.lock().tokens.clear();
            next.run(req).await
        }
        Some(
            fault @ (FaultKind::RepeatPage
            | FaultKind::SkipRows(_)
            | FaultKind::NoData
            | FaultKind::CheckStatus(_)),
        ) => {
            req.extensions_mut().insert(HandlerFault(fault));
            next.run(req).await
        }
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                code,
                Json(json!({"statusCode": code.as_u16(), "message": "Injected fault"})),
            )
                .into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        None => next.run(req).await,
    };
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "PING simulator answered");
    sim.lock().requests.push(ReceivedRequest {
        method,
        path,
        status,
    });
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"statusCode": 404, "message": "Resource not found"})),
    )
        .into_response()
}

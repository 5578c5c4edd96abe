//! Serving the simulator: its router, request counting, the fallback, and
//! the running server's handle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::{login, logout, require_auth};
use super::cases::{create_case, get_case, list_cases, patch_case};
use super::faults::inject_faults;
use super::flags::{create_flag, list_flags};
use super::referrals::{create_referral, list_referrals, patch_referral};
use super::state::PrimeroSim;
use super::users::list_users;
use super::wire::primero_error;

/// A simulator serving HTTP. Dereferences to [`PrimeroSim`] for driving; the
/// server stops on [`shutdown`](Self::shutdown) or when this is dropped.
pub struct RunningPrimeroSim {
    sim: PrimeroSim,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningPrimeroSim {
    /// `http://IP:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sim(&self) -> &PrimeroSim {
        &self.sim
    }

    /// Stop accepting connections and wait (briefly) for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Idle keep-alive connections of a client may hold graceful
            // shutdown open; don't let a test hang on them.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("Primero simulator shutdown timed out");
            }
        }
    }
}

impl std::ops::Deref for RunningPrimeroSim {
    type Target = PrimeroSim;
    fn deref(&self) -> &PrimeroSim {
        &self.sim
    }
}

impl Drop for RunningPrimeroSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl PrimeroSim {
    /// The API routes, for mounting into another axum app.
    pub fn router(&self) -> Router {
        let protected = Router::new()
            .route("/api/v2/cases", get(list_cases).post(create_case))
            .route("/api/v2/cases/{id}", get(get_case).patch(patch_case))
            .route(
                "/api/v2/cases/{id}/referrals",
                get(list_referrals).post(create_referral),
            )
            .route(
                "/api/v2/cases/{id}/referrals/{referral_id}",
                patch(patch_referral),
            )
            .route("/api/v2/users", get(list_users))
            .route(
                "/api/v2/cases/{id}/flags",
                get(list_flags).post(create_flag),
            )
            .route_layer(middleware::from_fn_with_state(self.clone(), require_auth));
        Router::new()
            .route("/api/v2/tokens", post(login).delete(logout))
            .merge(protected)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), inject_faults))
            .layer(middleware::from_fn_with_state(self.clone(), count_request))
            .with_state(self.clone())
    }

    /// Bind `addr` (e.g. `127.0.0.1:0`) and serve in a background task.
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<RunningPrimeroSim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RunningPrimeroSim {
            sim: self,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

async fn count_request(State(sim): State<PrimeroSim>, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "<unmatched>".to_string());
    let key = format!("{} {}", req.method(), template);
    let recording = sim.lock().writes.is_some();
    {
        let mut st = sim.lock();
        *st.requests.entry(key.clone()).or_insert(0) += 1;
        st.arrivals.push(Instant::now());
    }
    let _endpoint_in_flight = EndpointInFlight::enter(&sim, key.clone());
    let req = if recording && req.method() != Method::GET && template != "/api/v2/tokens" {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return primero_error(
                StatusCode::BAD_REQUEST,
                &template,
                json!("unreadable body"),
                None,
            );
        };
        sim.keep_write(key, &bytes);
        Request::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        req
    };
    let _in_flight = sim.in_flight.enter();
    next.run(req).await
}

/// One request of an endpoint being handled; leaves the count when dropped
/// (also when the client goes away).
struct EndpointInFlight {
    sim: PrimeroSim,
    key: String,
}

impl EndpointInFlight {
    fn enter(sim: &PrimeroSim, key: String) -> Self {
        let mut st = sim.lock();
        let (now, max) = st.in_flight_by.entry(key.clone()).or_insert((0, 0));
        *now += 1;
        *max = (*max).max(*now);
        drop(st);
        EndpointInFlight {
            sim: sim.clone(),
            key,
        }
    }
}

impl Drop for EndpointInFlight {
    fn drop(&mut self) {
        if let Some((now, _)) = self.sim.lock().in_flight_by.get_mut(&self.key) {
            *now = now.saturating_sub(1);
        }
    }
}

async fn not_found(req: Request) -> Response {
    primero_error(
        StatusCode::NOT_FOUND,
        req.uri().path(),
        json!("Not Found"),
        None,
    )
}

//! The operator endpoints of `bridge run`:
//!
//! - `GET /metrics`: [`super::metrics()`] in the OpenMetrics text format.
//! - `GET /healthz`: `200 ok` while the process runs.
//! - `GET /readyz`: `200 {"ready":true}` once the service is ready (catalog
//!   loaded, store open), else `503 {"ready":false,"reason":"…"}`; while the
//!   state database fails (deleted, replaced, disk full, write errors) the
//!   reason is its code, e.g. `store-full`; while a partner's last calls all
//!   went unanswered ([`super::reach`]), the reason names the partner.

use std::sync::{Arc, RwLock};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Content type of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness, shared between the service (which flips it) and the router.
/// Cheap to clone; starts not ready ("starting").
#[derive(Clone, Debug)]
pub struct Health {
    /// `None` when ready; else why not.
    not_ready: Arc<RwLock<Option<String>>>,
    /// The state database's fault code, if any: not ready while it lasts.
    store_fault: Arc<RwLock<Option<&'static str>>>,
    /// Whether the partners' last calls count ([`Health::watching_partners`]).
    partners: bool,
    /// This replica and the leases of the state database, shown by
    /// `/readyz` (ids and times only).
    cluster: Arc<RwLock<Option<serde_json::Value>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            not_ready: Arc::new(RwLock::new(Some("starting".to_string()))),
            store_fault: Arc::new(RwLock::new(None)),
            partners: false,
            cluster: Arc::new(RwLock::new(None)),
        }
    }

    /// What `/readyz` shows under `cluster`: this replica's id and who
    /// holds which lease.
    pub fn set_cluster(&self, value: serde_json::Value) {
        match self.cluster.write() {
            Ok(mut g) => *g = Some(value),
            Err(poisoned) => *poisoned.into_inner() = Some(value),
        }
    }

    fn cluster(&self) -> Option<serde_json::Value> {
        match self.cluster.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Also not ready while a partner's last calls all went unanswered
    /// ([`super::reach`], process-wide: for the service, not for a test
    /// process running many apps at once).
    pub fn watching_partners(mut self) -> Self {
        self.partners = true;
        self
    }

    /// Ready, or not ready for an unspecified reason.
    pub fn set_ready(&self, ready: bool) {
        self.set(if ready {
            None
        } else {
            Some("not ready".to_string())
        });
    }

    /// Not ready, with a reason shown by `/readyz` (no personal data).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set(Some(reason.into()));
    }

    pub fn is_ready(&self) -> bool {
        self.reason().is_none()
    }

    /// The state database's fault (a reason code), or `None` once it
    /// works again. Kept apart from the lifecycle reason so that a store
    /// that recovers does not make a service that is stopping ready again.
    pub fn set_store_fault(&self, code: Option<&'static str>) {
        match self.store_fault.write() {
            Ok(mut g) => *g = code,
            Err(poisoned) => *poisoned.into_inner() = code,
        }
    }

    /// Why the service is not ready; `None` when ready.
    pub fn reason(&self) -> Option<String> {
        let lifecycle = match self.not_ready.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let store = match self.store_fault.read() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        };
        lifecycle
            .or_else(|| store.map(str::to_string))
            .or_else(|| self.partners.then(super::reach::unreachable).flatten())
    }

    fn set(&self, value: Option<String>) {
        match self.not_ready.write() {
            Ok(mut g) => *g = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move { readyz(&health) }
            }),
        )
}

async fn metrics_handler() -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        super::metrics().encode(),
    )
        .into_response()
}

fn readyz(health: &Health) -> Response {
    let (status, mut body) = match health.reason() {
        None => (StatusCode::OK, serde_json::json!({"ready": true})),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "reason": reason}),
        ),
    };
    if let Some(cluster) = health.cluster() {
        body["cluster"] = cluster;
    }
    (status, axum::Json(body)).into_response()
}

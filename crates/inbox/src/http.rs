//! `POST /dtp/inbox`: where DTP pushes proGres messages (spec §1.A, §3.1).
//!
//! Order of checks: API key (401), content type (415: `application/json`,
//! optionally `; charset=utf-8`), size (413), body within its deadline (408),
//! UTF-8 / nesting / JSON (400), routing, required fields and control
//! characters (422). A message is answered 202 with its
//! receipt id only once it is sealed and stored; a refused message is not
//! stored at all. Every refusal is `{"error": <code>, "reason": <text>}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::validate::{validate, Rejection};
use bridge_store::{Sealer, Store};

pub const INBOX_PATH: &str = "/dtp/inbox";
/// Header carrying the inbox API key, as DTP sends it.
pub const API_KEY_HEADER: &str = "x-api-key";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default time to receive a whole body once its header is in.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Shortest API key accepted in the configuration.
pub const MIN_API_KEY_CHARS: usize = 16;

/// The id recorded for the key of [`InboxState::new`] (a config's single
/// `api_key`).
pub const SINGLE_KEY_ID: &str = "api_key";

/// What the HTTP side needs. Cheap to clone.
#[derive(Clone)]
pub struct InboxState {
    store: Arc<dyn Store>,
    sealer: Sealer,
    /// Each valid key's id and SHA-256: comparing digests in constant time
    /// hides a key's length as well as its content. Several during a
    /// rotation window.
    api_keys: Arc<Vec<(String, [u8; 32])>>,
    max_body_bytes: usize,
    body_timeout: std::time::Duration,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for InboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxState")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl InboxState {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Sealer,
        api_key: &str,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            store,
            sealer,
            api_keys: Arc::new(vec![(
                SINGLE_KEY_ID.to_string(),
                Sha256::digest(api_key.as_bytes()).into(),
            )]),
            max_body_bytes,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            notify: Arc::new(Notify::new()),
        }
    }

    /// Time allowed to receive a whole body (408 after it).
    pub fn with_body_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Signalled after each stored message, for the processor to wake up.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// The valid keys, `(id, key)`, replacing the one given to [`Self::new`].
    pub fn with_keys(mut self, keys: &[(String, String)]) -> Self {
        self.api_keys = Arc::new(
            keys.iter()
                .map(|(id, key)| (id.clone(), Sha256::digest(key.as_bytes()).into()))
                .collect(),
        );
        self
    }

    /// The id of the key presented, if it is valid. Every key is compared,
    /// so the time taken does not say which one matched.
    fn key_id(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for (id, valid) in self.api_keys.iter() {
            if bool::from(digest.ct_eq(valid)) {
                found = Some(id.as_str());
            }
        }
        found
    }
}

/// The inbox routes.
pub fn router(state: InboxState) -> Router {
    Router::new()
        .route(INBOX_PATH, post(receive))
        .method_not_allowed_fallback(|| async {
            refuse(Rejection::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("use POST {INBOX_PATH}"),
            ))
        })
        .fallback(|| async {
            refuse(Rejection::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("the inbox is at POST {INBOX_PATH}"),
            ))
        })
        .with_state(state)
}

fn refuse(r: Rejection) -> Response {
    tracing::info!(status = r.status.as_u16(), code = r.code, reason = %r.reason, "inbox refused a message");
    let mut response =
        (r.status, Json(json!({"error": r.code, "reason": r.reason}))).into_response();
    if r.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may still come: the connection is not reusable.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// `application/json`, with no parameter but `charset=utf-8`.
fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let unsupported = || {
        Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "content-type must be application/json (optionally with charset=utf-8)",
        )
    };
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsupported)?;
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(unsupported());
    }
    for param in parts {
        let (name, val) = param.split_once('=').ok_or_else(unsupported)?;
        let val = val.trim().trim_matches('"');
        if !(name.trim().eq_ignore_ascii_case("charset") && val.eq_ignore_ascii_case("utf-8")) {
            return Err(unsupported());
        }
    }
    Ok(())
}

async fn receive(State(state): State<InboxState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&state, &headers, body).await {
        Ok(receipt_id) => (
            StatusCode::ACCEPTED,
            Json(json!({"receipt_id": receipt_id, "status": "accepted"})),
        )
            .into_response(),
        Err(rejection) => refuse(rejection),
    }
}

async fn accept(state: &InboxState, headers: &HeaderMap, body: Body) -> Result<String, Rejection> {
    let unauthorized =
        |reason: &str| Rejection::new(StatusCode::UNAUTHORIZED, "unauthorized", reason.to_string());
    let key = headers
        .get(API_KEY_HEADER)
        .ok_or_else(|| unauthorized("the x-api-key header is missing"))?;
    let Some(key_id) = state.key_id(key.as_bytes()) else {
        return Err(unauthorized("the x-api-key header is not valid"));
    };
    check_content_type(headers)?;

    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("body is larger than {} bytes", state.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(too_large());
    }
    let read = Limited::new(body, state.max_body_bytes).collect();
    let bytes = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| {
            Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                    "the body did not arrive within {} seconds",
                    state.body_timeout.as_secs_f64()
                ),
            )
        })?
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                too_large()
            } else {
                Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "body-unreadable",
                    "the body could not be read",
                )
            }
        })?
        .to_bytes();

    let (kind, _) = validate(&bytes)?;

    let receipt_id = uuid::Uuid::new_v4().to_string();
    let sealed = state.sealer.seal(&receipt_id, &bytes).map_err(|_| {
        tracing::error!(receipt = %receipt_id, "inbox could not seal a message");
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the message could not be stored; send it again",
        )
    })?;
    // Checked first: a message put into a deleted or replaced database
    // would be acknowledged and then lost.
    state
        .store
        .verify()
        .await
        .map_err(|e| {
            tracing::error!(receipt = %receipt_id, code = e.code(), error = %e, "inbox refused a message: state database unusable");
            Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the message could not be stored; send it again",
            )
        })?;
    state
        .store
        .inbox_put(&receipt_id, kind.request_type(), key_id, &sealed)
        .await
        .map_err(|e| {
            tracing::error!(receipt = %receipt_id, error = %e, "inbox could not store a message");
            Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the message could not be stored; send it again",
            )
        })?;
    tracing::info!(
        receipt = %receipt_id,
        kind = kind.request_type(),
        bytes = bytes.len(),
        key_id,
        "inbox accepted a message"
    );
    state.notify.notify_one();
    Ok(receipt_id)
}

//! Primero's wire shapes the handlers share: errors as ErrorService and
//! Devise render them, and the `{"data": …}` request envelope.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// ErrorService's message when a record fails its JSON schema.
const INVALID_RECORD_JSON: &str = "Invalid Record JSON";

/// Why a driving call (or the equivalent HTTP call) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("case not found")]
    CaseNotFound,
    #[error("referral not found")]
    ReferralNotFound,
    #[error("a record with this id already exists")]
    Conflict,
    /// A model validation (ActiveRecord::RecordInvalid): one message about a field.
    #[error("invalid field {field}: {message}")]
    Invalid { field: String, message: String },
    /// The body fails the record's JSON schema: JSON pointers of the bad values.
    #[error("invalid record JSON at {}", pointers.join(", "))]
    InvalidJson { pointers: Vec<String> },
    /// A required request parameter is missing (ActionController::ParameterMissing).
    #[error("param is missing or the value is empty: {0}")]
    ParamMissing(String),
}

impl SimError {
    pub(super) fn invalid(field: &str, message: &str) -> Self {
        SimError::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    pub(super) fn invalid_json(pointer: String) -> Self {
        SimError::InvalidJson {
            pointers: vec![pointer],
        }
    }

    /// ErrorService's answer (app/services/error_service.rb).
    pub(super) fn into_response(self, resource: &str) -> Response {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match self {
            SimError::CaseNotFound | SimError::ReferralNotFound => {
                primero_error(StatusCode::NOT_FOUND, resource, json!("Not Found"), None)
            }
            SimError::Conflict => primero_error(
                StatusCode::CONFLICT,
                resource,
                json!("Conflict: A record with this id already exists"),
                None,
            ),
            // `errors.messages` of the model: an array of messages per field.
            SimError::Invalid { field, message } => primero_error(
                unprocessable,
                resource,
                json!([message]),
                Some(json!(field)),
            ),
            SimError::InvalidJson { pointers } => primero_error(
                unprocessable,
                resource,
                json!(INVALID_RECORD_JSON),
                Some(json!(pointers)),
            ),
            e @ SimError::ParamMissing(_) => {
                primero_error(unprocessable, resource, json!(e.to_string()), None)
            }
        }
    }
}

/// An error as Primero's ErrorService renders it
/// (app/views/api/v2/errors/_error.json.jbuilder): `status`, `resource`,
/// `detail` when present, `message` (a string, or an array of them).
pub(super) fn primero_error(
    status: StatusCode,
    resource: &str,
    message: Value,
    detail: Option<Value>,
) -> Response {
    let mut error = Map::new();
    error.insert("status".into(), json!(status.as_u16()));
    error.insert("resource".into(), json!(resource));
    if let Some(detail) = detail {
        error.insert("detail".into(), detail);
    }
    error.insert("message".into(), message);
    (status, Json(json!({ "errors": [error] }))).into_response()
}

/// Devise's refusal of a request or login: `{"error": …}`, not ErrorService's shape.
pub(super) fn devise_refusal(message: &str) -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Primero\""),
    );
    response
}

/// `{"data": {...}}` → the inner object; anything else is Primero's 422.
pub(super) fn parse_data(body: &[u8]) -> Result<Map<String, Value>, SimError> {
    let missing = || SimError::ParamMissing("data".to_string());
    let value: Value = serde_json::from_slice(body).map_err(|_| missing())?;
    match value {
        Value::Object(mut envelope) => match envelope.remove("data") {
            Some(Value::Object(data)) => Ok(data),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

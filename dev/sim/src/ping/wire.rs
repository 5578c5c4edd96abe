//! PING's wire format as the simulator reads it: paths, rows, strict request
//! bodies, and PING-style refusals.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::state::{new_guid, PingSim};

/// A row as PING returns it.
pub type Row = Map<String, Value>;

pub const TOKEN_PATH: &str = "/oauth2/v2.0/token";
pub const RETRIEVE_PATH: &str = "/primes/fetch/paging/v3/retrievedatawithpaging";
pub const CHECK_STATUS_PATH: &str = "/primes/ingestion/checkstatus/v1/pingdata";
pub const NO_DATA: &str = "No Data Available";

// ---------------------------------------------------------------------------
// Request bodies (strict: a wrongly cased key is an error, as a test needs)
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetrieveBody {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: String,
    #[serde(rename = "PartnerId")]
    pub(super) partner_id: String,
    #[serde(rename = "InteropID")]
    pub(super) interop_id: String,
    #[serde(rename = "APIVersion")]
    pub(super) api_version: String,
    #[serde(rename = "QueryParameters", default)]
    pub(super) query_parameters: Vec<QueryParameterIn>,
    #[serde(rename = "PagingCookie", default)]
    pub(super) paging_cookie: Option<String>,
    #[serde(rename = "PageNumber", default)]
    pub(super) page_number: Option<i64>,
    #[serde(rename = "PagingSummary", default)]
    pub(super) paging_summary: Option<PagingSummaryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryParameterIn {
    #[serde(rename = "ParameterName")]
    pub(super) parameter_name: String,
    #[serde(rename = "Value")]
    pub(super) value: String,
}

#[derive(Deserialize)]
pub(super) struct PagingSummaryIn {
    #[serde(rename = "PagingCookie", default)]
    pub(super) paging_cookie: Option<String>,
    #[serde(rename = "PageNumber", default)]
    pub(super) page_number: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncIngestionBody {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: String,
    #[serde(rename = "InteropId")]
    pub(super) interop_id: String,
    #[serde(rename = "Data")]
    pub(super) data: Vec<SyncRecordIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncRecordIn {
    #[serde(rename = "ExternalId")]
    pub(super) external_id: String,
    #[serde(rename = "Attachments", default)]
    pub(super) attachments: Option<Vec<AttachmentIn>>,
    #[serde(rename = "Fields")]
    pub(super) fields: Vec<FieldIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttachmentIn {
    #[serde(rename = "Comment")]
    pub(super) comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FieldIn {
    #[serde(rename = "Name")]
    pub(super) name: String,
    #[serde(rename = "Value")]
    pub(super) value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AsyncIngestionBody {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: String,
    #[serde(rename = "InteropID")]
    pub(super) interop_id: String,
    #[serde(rename = "APIVersion")]
    pub(super) api_version: String,
    #[serde(rename = "Data")]
    pub(super) data: Vec<AsyncRecordIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AsyncRecordIn {
    #[serde(rename = "ExternalId")]
    pub(super) external_id: String,
    #[serde(rename = "ExternalGUID")]
    pub(super) external_guid: String,
    #[serde(rename = "Fields")]
    pub(super) fields: Vec<FieldIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckStatusBody {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: String,
    #[serde(rename = "InteropID")]
    pub(super) interop_id: String,
    #[serde(rename = "PartnerId")]
    pub(super) partner_id: String,
    #[serde(rename = "SPHTransactionId")]
    pub(super) sph_transaction_id: String,
}

/// A PING-style error answer (retrieve envelope, ErrorMessage set).
pub(super) fn ping_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({
            "Data": null,
            "ErrorMessage": message.into(),
            "RecordCount": null,
            "SPHTransactionId": new_guid(),
            "PagingSummary": null,
        })),
    )
        .into_response()
}

/// A request refused before processing; answered by [`ping_error`].
pub(super) struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        ping_error(self.status, self.message)
    }
}

/// Check the content type and decode the JSON body. Error answers name the
/// offending key but never echo a value (they may end up in client logs).
pub(super) fn decode<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Rejection> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let message = if text.starts_with("unknown field") || text.starts_with("missing field") {
            format!(
                "Invalid request body: {}",
                text.split(", expected").next().unwrap_or("")
            )
        } else {
            "Invalid request body".to_string()
        };
        Rejection::new(StatusCode::BAD_REQUEST, message)
    })
}

pub(super) fn check_ids(
    sim: &PingSim,
    partner_id: &str,
    interop_id: &str,
) -> Result<(), Rejection> {
    let config = &sim.inner.config;
    if partner_id != config.partner_id {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "PartnerId is not valid for this subscription",
        ));
    }
    if interop_id != config.interop_id {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "InteropID is not valid for this partner",
        ));
    }
    Ok(())
}

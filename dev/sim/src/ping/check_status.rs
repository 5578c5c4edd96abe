//! Check status: an async ingestion's outcome, in the shapes PING sends.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::config::Shp;
use super::faults::{FaultKind, HandlerFault, StatusShape};
use super::ingest::record_body;
use super::state::{PingSim, TransactionItem};
use super::wire::{check_ids, decode, ping_error, CheckStatusBody, CHECK_STATUS_PATH, NO_DATA};

pub(super) async fn check_status(
    State(sim): State<PingSim>,
    fault: Option<Extension<HandlerFault>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record_body(&sim, CHECK_STATUS_PATH, &body);
    let req: CheckStatusBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    sim.count_call("checkstatus", &req.shipping_process_id);
    if let Err(rejection) = check_ids(&sim, &req.partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    if sim.inner.config.shipping.kind(&req.shipping_process_id) != Some(Shp::InteropReferral) {
        return ping_error(
            StatusCode::BAD_REQUEST,
            "Shipping process is not an async ingestion process for this partner",
        );
    }
    let st = sim.lock();
    let Some(items) = st.transactions.get(&req.sph_transaction_id) else {
        return ping_error(StatusCode::BAD_REQUEST, "SPHTransactionId not found");
    };
    let shape = match fault {
        Some(Extension(HandlerFault(FaultKind::CheckStatus(shape)))) => shape,
        _ => StatusShape::Example19,
    };
    status_body(&shape, items)
}

/// A check-status answer in one of the shapes PING sends.
fn status_body(shape: &StatusShape, items: &[TransactionItem]) -> Response {
    let json_body = |v: Value| Json(v).into_response();
    let raw_body = |text: String| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response()
    };
    match shape {
        StatusShape::Example19 => json_body(json!({"Data": malformed_status_text(items)})),
        StatusShape::WellFormed => json_body(json!({"Data": items
            .iter()
            .map(|i| json!({
                "Status": i.status,
                "Data": Value::Object(i.data.clone()).to_string(),
                "Message": i.message,
            }))
            .collect::<Vec<_>>()})),
        StatusShape::BareArray => json_body(Value::Array(
            items
                .iter()
                .map(|i| json!({"Status": i.status, "Data": i.data, "Message": i.message}))
                .collect(),
        )),
        StatusShape::UnescapedTwice => {
            raw_body(format!("{{\"Data\":\"{}\"}}", malformed_status_text(items)))
        }
        StatusShape::NoData => json_body(json!({"Data": NO_DATA})),
        StatusShape::ErrorMessage(message) => {
            json_body(json!({"ErrorMessage": message, "Data": null}))
        }
        StatusShape::Garbage => raw_body("{\"Data\": [{\"Status\": ".to_string()),
    }
}

/// The check-status `Data` string as PING writes it (example 19): a JSON
/// array whose items' inner `Data` object is embedded without escaping.
fn malformed_status_text(items: &[TransactionItem]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|item| {
            format!(
                "{{\"Status\":{},\"Data\":\"{}\",\"Message\":{}}}",
                Value::String(item.status.clone()),
                Value::Object(item.data.clone()),
                Value::String(item.message.clone()),
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ping::rows::into_row;

    #[test]
    fn check_status_text_is_example_19() {
        let items = [TransactionItem {
            status: "Processed".into(),
            data: into_row(
                json!({"progres_interoperabilityreferralid": "0b7f1c2e-9999-4a4a-9c9c-000000000009"}),
            ),
            message: "OK".into(),
        }];
        let wire = serde_json::to_string(&json!({"Data": malformed_status_text(&items)})).unwrap();
        assert_eq!(
            wire,
            r#"{"Data":"[{\"Status\":\"Processed\",\"Data\":\"{\"progres_interoperabilityreferralid\":\"0b7f1c2e-9999-4a4a-9c9c-000000000009\"}\",\"Message\":\"OK\"}]"}"#
        );
    }
}

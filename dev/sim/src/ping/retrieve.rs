//! `retrievedatawithpaging`: the first page snapshots the rows, paging
//! cookies serve the rest; paging faults.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::config::Shp;
use super::faults::{FaultKind, HandlerFault};
use super::rows::{
    interop_detail_row, interop_list_rows, intervention_detail_rows, pending_delivery_rows,
};
use super::state::{new_guid, PagingCursor, PingSim};
use super::wire::{check_ids, decode, ping_error, RetrieveBody, NO_DATA};

pub(super) async fn retrieve(
    State(sim): State<PingSim>,
    fault: Option<Extension<HandlerFault>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = fault.map(|Extension(HandlerFault(f))| f);
    if fault == Some(FaultKind::NoData) {
        return Json(json!({
            "Data": NO_DATA,
            "ErrorMessage": null,
            "RecordCount": null,
            "SPHTransactionId": new_guid(),
            "PagingSummary": {"PagingCookie": null, "PageNumber": 0, "IsMoreRecordsAvailable": false},
        }))
        .into_response();
    }
    let req: RetrieveBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    sim.count_call("retrieve", &req.shipping_process_id);
    if let Err(rejection) = check_ids(&sim, &req.partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    if req.api_version != "V3" {
        return ping_error(StatusCode::BAD_REQUEST, "Unsupported APIVersion");
    }
    let summary_cookie = req
        .paging_summary
        .as_ref()
        .and_then(|s| s.paging_cookie.clone());
    let cookie = req.paging_cookie.clone().or(summary_cookie);
    let requested_page = req
        .page_number
        .or(req.paging_summary.as_ref().and_then(|s| s.page_number));

    let mut st = sim.lock();
    let cookie = cookie.filter(|c| !c.is_empty());
    if let (Some(FaultKind::RepeatPage), Some(cookie)) = (&fault, &cookie) {
        if let Some(cursor) = st.paging.get(cookie) {
            let start = cursor.offset.saturating_sub(st.page_size);
            let page: Vec<Value> = cursor.rows[start..cursor.offset]
                .iter()
                .cloned()
                .map(Value::Object)
                .collect();
            return Json(json!({
                "Data": page,
                "ErrorMessage": null,
                "RecordCount": page.len(),
                "SPHTransactionId": new_guid(),
                "PagingSummary": {
                    "PagingCookie": cookie,
                    "PageNumber": cursor.page_number - 1,
                    "IsMoreRecordsAvailable": true,
                },
            }))
            .into_response();
        }
    }
    let (rows, offset, page_number) = match cookie {
        Some(cookie) => {
            let Some(cursor) = st.paging.get(&cookie) else {
                return ping_error(StatusCode::BAD_REQUEST, "Invalid PagingCookie");
            };
            if cursor.shipping_process_id != req.shipping_process_id {
                return ping_error(
                    StatusCode::BAD_REQUEST,
                    "PagingCookie belongs to another shipping process",
                );
            }
            if requested_page.is_some_and(|n| n != cursor.page_number) {
                return ping_error(
                    StatusCode::BAD_REQUEST,
                    "PageNumber does not match PagingCookie",
                );
            }
            (cursor.rows.clone(), cursor.offset, cursor.page_number)
        }
        None => {
            let Some(kind) = sim.inner.config.shipping.kind(&req.shipping_process_id) else {
                return ping_error(
                    StatusCode::BAD_REQUEST,
                    "Shipping process is not configured for this partner",
                );
            };
            let record_ids: Option<Vec<String>> = req
                .query_parameters
                .iter()
                .find(|p| p.parameter_name == "{record_ids}")
                .map(|p| {
                    p.value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                });
            let rows = match (kind, record_ids) {
                (Shp::PendingDeliveries, _) => pending_delivery_rows(&st),
                (Shp::InteropReferralList, _) => interop_list_rows(&st),
                (Shp::InterventionDetails, Some(ids)) => ids
                    .iter()
                    .flat_map(|id| intervention_detail_rows(&st, id))
                    .collect(),
                (Shp::InteropReferralDetails, Some(ids)) => ids
                    .iter()
                    .filter_map(|id| interop_detail_row(&st, id))
                    .collect(),
                (Shp::InterventionDetails | Shp::InteropReferralDetails, None) => {
                    return ping_error(
                        StatusCode::BAD_REQUEST,
                        "Missing query parameter {record_ids}",
                    )
                }
                (Shp::TransferStatus | Shp::InteropReferral | Shp::InteropReferralStatus, _) => {
                    return ping_error(
                        StatusCode::BAD_REQUEST,
                        "Shipping process is not a retrieve process",
                    )
                }
            };
            (Arc::new(rows), 0, 0)
        }
    };

    let end = (offset + st.page_size).min(rows.len());
    let first = match fault {
        Some(FaultKind::SkipRows(n)) => offset.saturating_add(n).min(end),
        _ => offset,
    };
    let page: Vec<Value> = rows[first..end]
        .iter()
        .cloned()
        .map(Value::Object)
        .collect();
    let more = end < rows.len();
    let next_cookie = more.then(|| {
        // Opaque and XML-ish like Dataverse's, so clients must pass it back verbatim.
        let cookie = format!(
            "<cookie page=\"{}\" snapshot=\"{}\" />",
            page_number + 1,
            uuid::Uuid::new_v4().simple()
        );
        st.paging.insert(
            cookie.clone(),
            PagingCursor {
                shipping_process_id: req.shipping_process_id.clone(),
                rows: rows.clone(),
                offset: end,
                page_number: page_number + 1,
            },
        );
        cookie
    });
    drop(st);

    let count = page.len();
    Json(json!({
        "Data": if count == 0 { json!(NO_DATA) } else { Value::Array(page) },
        "ErrorMessage": null,
        "RecordCount": if count == 0 { Value::Null } else { json!(count) },
        "SPHTransactionId": new_guid(),
        "PagingSummary": {
            "PagingCookie": next_cookie,
            "PageNumber": page_number,
            "IsMoreRecordsAvailable": more,
        },
    }))
    .into_response()
}

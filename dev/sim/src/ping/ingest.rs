//! Sync and async ingestion: the records received, applied to interventions
//! and interoperability referrals.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::config::Shp;
use super::model::{ReceivedBody, ReceivedIngestion};
use super::rows::into_row;
use super::state::{new_guid, new_interop_referral, PingSim, SimState, TransactionItem};
use super::wire::{
    check_ids, decode, ping_error, AsyncIngestionBody, FieldIn, Row, SyncIngestionBody,
};

pub(super) fn record_body(sim: &PingSim, path: &str, body: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        sim.lock().bodies.push(ReceivedBody {
            path: path.to_string(),
            body: value,
        });
    }
}

fn fields_of(fields: Vec<FieldIn>) -> Vec<(String, Value)> {
    fields.into_iter().map(|f| (f.name, f.value)).collect()
}

/// A field's string value; proGres takes every value as a string.
fn text_field<'a>(record: &'a ReceivedIngestion, name: &str) -> Result<Option<&'a str>, String> {
    match record.field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("Field {name} must be a string")),
    }
}

/// Whether the record carries `name` with an explicit `null` value.
fn sent_null(record: &ReceivedIngestion, name: &str) -> bool {
    matches!(record.field(name), Some(Value::Null))
}

pub(super) async fn ingest_sync(
    State(sim): State<PingSim>,
    Path(partner_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/ingestion/v2/{partner_id}/data");
    record_body(&sim, &path, &body);
    let req: SyncIngestionBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    sim.count_call("ingest", &req.shipping_process_id);
    if let Err(rejection) = check_ids(&sim, &partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    let kind = sim.inner.config.shipping.kind(&req.shipping_process_id);
    if !matches!(kind, Some(Shp::TransferStatus | Shp::InteropReferralStatus)) {
        return ping_error(
            StatusCode::BAD_REQUEST,
            "Shipping process is not a sync ingestion process for this partner",
        );
    }
    let transaction_id = new_guid();
    let mut st = sim.lock();
    let mut results = Vec::with_capacity(req.data.len());
    for record in req.data {
        let received = ReceivedIngestion {
            path: path.clone(),
            shipping_process_id: req.shipping_process_id.clone(),
            sph_transaction_id: transaction_id.clone(),
            external_id: record.external_id,
            external_guid: None,
            attachments: record
                .attachments
                .map(|a| a.into_iter().map(|a| a.comment).collect()),
            fields: fields_of(record.fields),
        };
        let outcome = match kind {
            Some(Shp::TransferStatus) => apply_transfer_status(&mut st, &received),
            _ => apply_interop_status(&mut st, &received),
        };
        results.push(json!({
            "ExternalId": received.external_id,
            "Status": if outcome.is_ok() { "Success" } else { "Failed" },
            "Message": outcome.err(),
        }));
        st.ingestions.push(received);
    }
    drop(st);
    Json(json!({
        "SPHTransactionId": transaction_id,
        "ErrorMessage": null,
        "RecordCount": results.len(),
        "Data": results,
    }))
    .into_response()
}

/// SHP-2748: write the Primero transfer status onto the intervention; a
/// written status takes it out of the SHP-2747 queue.
fn apply_transfer_status(st: &mut SimState, record: &ReceivedIngestion) -> Result<(), String> {
    let id = text_field(record, "progres_lpinterventionid")?
        .ok_or("Missing key field progres_lpinterventionid")?;
    let status = text_field(record, "progres_primerotransferstatus")?;
    let date = text_field(record, "progres_primerotransferstatusdate")?;
    let primero_id = text_field(record, "progres_primeroid")?;
    let caseworker = text_field(record, "progres_primerocaseworker")?;
    let intervention = st.intervention_mut(id).ok_or("Record not found")?;
    if let Some(status) = status {
        intervention.transfer_status = Some(status.to_string());
        intervention.transfer_status_date = date.map(str::to_string);
        intervention.delivery = None;
    }
    // Dataverse writes what it is given: `"Value": null` clears the column,
    // a field left out keeps it.
    if primero_id.is_some() || sent_null(record, "progres_primeroid") {
        intervention.primero_id = primero_id.map(str::to_string);
    }
    if caseworker.is_some() || sent_null(record, "progres_primerocaseworker") {
        intervention.primero_caseworker = caseworker.map(str::to_string);
    }
    intervention
        .comments
        .extend(record.attachments.iter().flatten().cloned());
    intervention.status_writes += 1;
    Ok(())
}

/// SHP-2284: write status and comments onto an interoperability referral.
fn apply_interop_status(st: &mut SimState, record: &ReceivedIngestion) -> Result<(), String> {
    let id = text_field(record, "progres_interoperabilityreferralid")?
        .ok_or("Missing key field progres_interoperabilityreferralid")?;
    let status = text_field(record, "progres_interoperabilityreferralstatus")?
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| "Invalid option set value for progres_interoperabilityreferralstatus")
        })
        .transpose()?;
    let comment = text_field(record, "progres_comments")?;
    let referral = st
        .interop_referrals
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or("Record not found")?;
    if let Some(status) = status {
        referral.status = status;
    }
    if let Some(comment) = comment {
        referral.comments.push(comment.to_string());
    }
    referral
        .comments
        .extend(record.attachments.iter().flatten().cloned());
    Ok(())
}

pub(super) async fn ingest_async(
    State(sim): State<PingSim>,
    Path(partner_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/ingestion/v2/{partner_id}/asyncdata");
    record_body(&sim, &path, &body);
    let req: AsyncIngestionBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    sim.count_call("asyncdata", &req.shipping_process_id);
    if let Err(rejection) = check_ids(&sim, &partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    if req.api_version != "V2" {
        return ping_error(StatusCode::BAD_REQUEST, "Unsupported APIVersion");
    }
    if sim.inner.config.shipping.kind(&req.shipping_process_id) != Some(Shp::InteropReferral) {
        return ping_error(
            StatusCode::BAD_REQUEST,
            "Shipping process is not an async ingestion process for this partner",
        );
    }
    let transaction_id = new_guid();
    let mut st = sim.lock();
    let mut items = Vec::with_capacity(req.data.len());
    for record in req.data {
        let received = ReceivedIngestion {
            path: path.clone(),
            shipping_process_id: req.shipping_process_id.clone(),
            sph_transaction_id: transaction_id.clone(),
            external_id: record.external_id,
            external_guid: Some(record.external_guid),
            attachments: None,
            fields: fields_of(record.fields),
        };
        let text = |name: &str| {
            text_field(&received, name)
                .ok()
                .flatten()
                .map(str::to_string)
        };
        if !st.async_refusals.is_empty() {
            let message = st.async_refusals.remove(0);
            items.push(TransactionItem {
                status: "Failed".into(),
                data: Row::new(),
                message,
            });
            st.ingestions.push(received);
            continue;
        }
        let mut referral = new_interop_referral(st.interop_referrals.len() + 1);
        referral.offline_id = text("progres_offlineid");
        referral.org_referral_id = text("progres_orgreferralid");
        referral.external_id = Some(received.external_id.clone());
        referral.external_guid = received.external_guid.clone();
        referral.fields = received.fields.clone();
        items.push(TransactionItem {
            status: "Processed".into(),
            data: into_row(json!({"progres_interoperabilityreferralid": referral.id})),
            message: "OK".into(),
        });
        st.interop_referrals.push(referral);
        st.ingestions.push(received);
    }
    st.transactions.insert(transaction_id.clone(), items);
    drop(st);
    // Example 18's response.
    Json(json!({"SPHTransactionId": transaction_id, "ErrorMessage": null})).into_response()
}

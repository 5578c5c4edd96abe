//! Sync and async ingestion, and asking for an async ingestion's status.

use serde_json::Value;

use super::check_status::parse_check_status;
use super::client::PingClient;
use super::errors::{truncate, REASON_MAX_CHARS};
use super::lenient::{error_message_text, get_ci, lenient_u64, scalar_text};
use super::records::{
    AsyncIngestionRecord, IngestionRecord, IngestionResponse, IngestionResult, IngestionStatus,
};
use super::wire::{
    AsyncIngestionRequest, CheckStatusRequest, IngestionRequest, CHECK_STATUS_PATH,
    INGEST_ASYNC_PATH_TEMPLATE, INGEST_PATH_TEMPLATE,
};
use crate::retry::CallKind;
use crate::{ConnectorError, Effect, System};

impl PingClient {
    /// Sync ingestion (`/api/ingestion/v2/{PartnerId}/data`). No call is made
    /// for an empty record list (the original skipped it too).
    pub async fn ingest(
        &self,
        shipping_process_id: &str,
        records: &[IngestionRecord],
    ) -> Result<IngestionResponse, ConnectorError> {
        if records.is_empty() {
            return Ok(IngestionResponse::default());
        }
        let endpoint = format!("POST {INGEST_PATH_TEMPLATE} {shipping_process_id}");
        let body = IngestionRequest {
            shipping_process_id,
            interop_id: &self.config.interop_id,
            data: records,
        };
        let url = self.ingestion_url("data");
        let bytes = self
            .post_api(
                url,
                &endpoint,
                &body,
                CallKind::NonIdempotent,
                Effect::Write,
            )
            .await?;
        let response =
            parse_ingestion_response(&bytes).map_err(|reason| ConnectorError::Protocol {
                system: System::Ping,
                endpoint: endpoint.clone(),
                reason: self.scrub(&reason),
            })?;
        tracing::debug!(
            shipping_process = shipping_process_id,
            records = records.len(),
            transaction = response.sph_transaction_id.as_deref(),
            failures = response.failures().len(),
            "PING ingestion answered"
        );
        Ok(response)
    }

    /// Async ingestion (`/asyncdata`). Returns the `SPHTransactionId` to pass
    /// to [`check_status`](Self::check_status); `None` when PING accepted the
    /// records without one (the original only warned).
    pub async fn ingest_async(
        &self,
        shipping_process_id: &str,
        records: &[AsyncIngestionRecord],
    ) -> Result<Option<String>, ConnectorError> {
        let endpoint = format!("POST {INGEST_ASYNC_PATH_TEMPLATE} {shipping_process_id}");
        let body = AsyncIngestionRequest {
            shipping_process_id,
            interop_id: &self.config.interop_id,
            api_version: "V2",
            data: records,
        };
        let url = self.ingestion_url("asyncdata");
        let bytes = self
            .post_api(
                url,
                &endpoint,
                &body,
                CallKind::NonIdempotent,
                Effect::Write,
            )
            .await?;
        let response =
            parse_ingestion_response(&bytes).map_err(|reason| ConnectorError::Protocol {
                system: System::Ping,
                endpoint: endpoint.clone(),
                reason: self.scrub(&reason),
            })?;
        if response.sph_transaction_id.is_none() {
            tracing::warn!(
                shipping_process = shipping_process_id,
                "PING async ingestion answered without SPHTransactionId"
            );
        }
        Ok(response.sph_transaction_id)
    }

    /// Status of an async ingestion. Tolerates the malformed body PING sends
    /// (see [`parse_check_status`]).
    pub async fn check_status(
        &self,
        shipping_process_id: &str,
        sph_transaction_id: &str,
    ) -> Result<Vec<IngestionStatus>, ConnectorError> {
        let endpoint = format!("POST {CHECK_STATUS_PATH} {shipping_process_id}");
        let body = CheckStatusRequest {
            shipping_process_id,
            interop_id: &self.config.interop_id,
            partner_id: &self.config.partner_id,
            sph_transaction_id,
        };
        let url = self.url_for(&[CHECK_STATUS_PATH]);
        // Asking about a transaction changes nothing.
        let bytes = self
            .post_api(url, &endpoint, &body, CallKind::Idempotent, Effect::Read)
            .await?;
        parse_check_status(&bytes).map_err(|e| ConnectorError::Protocol {
            system: System::Ping,
            endpoint,
            reason: self.scrub(&truncate(&e.to_string(), REASON_MAX_CHARS)),
        })
    }
}

fn parse_ingestion_response(bytes: &[u8]) -> Result<IngestionResponse, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(IngestionResponse::default());
    }
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        // The 2xx status is the contract; an undocumented non-JSON body is tolerated.
        tracing::debug!("PING ingestion answered 2xx with a non-JSON body");
        return Ok(IngestionResponse::default());
    };
    let Value::Object(obj) = value else {
        return Ok(IngestionResponse::default());
    };
    if let Some(message) = error_message_text(get_ci(&obj, "ErrorMessage")) {
        return Err(format!(
            "ErrorMessage: {}",
            truncate(&message, REASON_MAX_CHARS)
        ));
    }
    let results = match get_ci(&obj, "Data") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|item| IngestionResult {
                external_id: get_ci(item, "ExternalId").and_then(scalar_text),
                status: get_ci(item, "Status").and_then(scalar_text),
                message: get_ci(item, "Message").and_then(scalar_text),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(IngestionResponse {
        sph_transaction_id: get_ci(&obj, "SPHTransactionId").and_then(scalar_text),
        record_count: lenient_u64(get_ci(&obj, "RecordCount")),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingestion_response_lenient() {
        let ok = br#"{"SPHTransactionId":"t1","ErrorMessage":null,"RecordCount":2,
            "Data":[{"ExternalId":"a","Status":"Success","Message":null},
                    {"ExternalId":"b","Status":"Failed","Message":"Record not found"}]}"#;
        let r = parse_ingestion_response(ok).unwrap();
        assert_eq!(r.sph_transaction_id.as_deref(), Some("t1"));
        assert_eq!(r.record_count, Some(2));
        assert_eq!(r.failures().len(), 1);
        assert_eq!(r.failures()[0].external_id.as_deref(), Some("b"));
        assert_eq!(
            parse_ingestion_response(b"").unwrap(),
            IngestionResponse::default()
        );
        assert_eq!(
            parse_ingestion_response(b"Accepted").unwrap(),
            IngestionResponse::default()
        );
        assert!(parse_ingestion_response(br#"{"ErrorMessage":"no"}"#).is_err());
    }
}

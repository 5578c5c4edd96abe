//! PING's wire format as the client writes it: paths, request bodies, the
//! token answer.

use serde::{Deserialize, Serialize};

use super::records::{AsyncIngestionRecord, IngestionRecord};

pub const RETRIEVE_PATH: &str = "/primes/fetch/paging/v3/retrievedatawithpaging";
pub const CHECK_STATUS_PATH: &str = "/primes/ingestion/checkstatus/v1/pingdata";
/// Path templates, as they appear in error endpoints.
pub const INGEST_PATH_TEMPLATE: &str = "/api/ingestion/v2/{PartnerId}/data";
pub const INGEST_ASYNC_PATH_TEMPLATE: &str = "/api/ingestion/v2/{PartnerId}/asyncdata";
/// What PING puts in `Data` when a retrieve matched nothing.
pub const NO_DATA: &str = "No Data Available";

#[derive(Serialize)]
pub(super) struct RetrieveRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: &'a str,
    #[serde(rename = "PartnerId")]
    pub(super) partner_id: &'a str,
    #[serde(rename = "InteropID")]
    pub(super) interop_id: &'a str,
    #[serde(rename = "APIVersion")]
    pub(super) api_version: &'a str,
    #[serde(rename = "QueryParameters")]
    pub(super) query_parameters: Vec<QueryParameter<'a>>,
    #[serde(rename = "PagingCookie", skip_serializing_if = "Option::is_none")]
    pub(super) paging_cookie: Option<&'a str>,
    #[serde(rename = "PageNumber", skip_serializing_if = "Option::is_none")]
    pub(super) page_number: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct QueryParameter<'a> {
    #[serde(rename = "ParameterName")]
    pub(super) parameter_name: &'a str,
    #[serde(rename = "Value")]
    pub(super) value: &'a str,
}

#[derive(Serialize)]
pub(super) struct IngestionRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: &'a str,
    // Sync ingestion spells it `InteropId`, unlike every other endpoint.
    #[serde(rename = "InteropId")]
    pub(super) interop_id: &'a str,
    #[serde(rename = "Data")]
    pub(super) data: &'a [IngestionRecord],
}

#[derive(Serialize)]
pub(super) struct AsyncIngestionRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: &'a str,
    #[serde(rename = "InteropID")]
    pub(super) interop_id: &'a str,
    #[serde(rename = "APIVersion")]
    pub(super) api_version: &'a str,
    #[serde(rename = "Data")]
    pub(super) data: &'a [AsyncIngestionRecord],
}

#[derive(Serialize)]
pub(super) struct CheckStatusRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    pub(super) shipping_process_id: &'a str,
    #[serde(rename = "InteropID")]
    pub(super) interop_id: &'a str,
    #[serde(rename = "PartnerId")]
    pub(super) partner_id: &'a str,
    #[serde(rename = "SPHTransactionId")]
    pub(super) sph_transaction_id: &'a str,
}

#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) expires_in: Option<ExpiresIn>,
}

// Azure AD v1 sends `expires_in` as a string, B2C as a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ExpiresIn {
    Number(u64),
    Text(String),
}

impl ExpiresIn {
    pub(super) fn seconds(&self) -> Option<u64> {
        match self {
            ExpiresIn::Number(n) => Some(*n),
            ExpiresIn::Text(s) => s.trim().parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ping::Field;

    #[test]
    fn ingestion_bodies_match_examples() {
        let sync = IngestionRequest {
            shipping_process_id: "SHP-2748",
            interop_id: "INT-1436",
            data: &[IngestionRecord {
                external_id: "id55".into(),
                attachments: None,
                fields: vec![Field::new("progres_primerotransferstatus", "125080002")],
            }],
        };
        assert_eq!(
            serde_json::to_string(&sync).unwrap(),
            r#"{"ShippingProcessId":"SHP-2748","InteropId":"INT-1436","Data":[{"ExternalId":"id55","Fields":[{"Name":"progres_primerotransferstatus","Value":"125080002"}]}]}"#
        );
        let synced = IngestionRecord {
            external_id: "x".into(),
            attachments: Some(vec![]),
            fields: vec![Field::null("progres_comments")],
        };
        assert_eq!(
            serde_json::to_string(&synced).unwrap(),
            r#"{"ExternalId":"x","Attachments":[],"Fields":[{"Name":"progres_comments","Value":null}]}"#
        );
        let asynchronous = AsyncIngestionRequest {
            shipping_process_id: "SHP-2731",
            interop_id: "INT-1436",
            api_version: "V2",
            data: &[AsyncIngestionRecord {
                external_id: "e".into(),
                external_guid: "g".into(),
                fields: vec![],
            }],
        };
        assert_eq!(
            serde_json::to_string(&asynchronous).unwrap(),
            r#"{"ShippingProcessId":"SHP-2731","InteropID":"INT-1436","APIVersion":"V2","Data":[{"ExternalId":"e","ExternalGUID":"g","Fields":[]}]}"#
        );
        let check = CheckStatusRequest {
            shipping_process_id: "SHP-2731",
            interop_id: "INT-1436",
            partner_id: "PNR-1363",
            sph_transaction_id: "t",
        };
        assert_eq!(
            serde_json::to_string(&check).unwrap(),
            r#"{"ShippingProcessId":"SHP-2731","InteropID":"INT-1436","PartnerId":"PNR-1363","SPHTransactionId":"t"}"#
        );
    }

    #[test]
    fn retrieve_request_matches_example_14() {
        let body = RetrieveRequest {
            shipping_process_id: "SHP-2747",
            partner_id: "PNR-1363",
            interop_id: "INT-1436",
            api_version: "V3",
            query_parameters: vec![],
            paging_cookie: None,
            page_number: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"ShippingProcessId":"SHP-2747","PartnerId":"PNR-1363","InteropID":"INT-1436","APIVersion":"V3","QueryParameters":[]}"#
        );
    }
}

//! Wire envelopes (`{"data": …}`, list metadata, login, errors) and reading
//! and writing bodies without quoting their values in errors.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::records::null_as_empty;
use crate::{ConnectorError, System};

#[derive(Debug, Deserialize)]
pub(super) struct DataEnvelope<T> {
    pub(super) data: T,
}

#[derive(Serialize)]
struct DataBody<'a, T: ?Sized> {
    data: &'a T,
}

#[derive(Deserialize)]
pub(super) struct ListEnvelope<T> {
    #[serde(
        deserialize_with = "null_as_empty",
        bound(deserialize = "T: Deserialize<'de>")
    )]
    pub(super) data: Vec<T>,
    #[serde(default)]
    pub(super) metadata: Option<Metadata>,
}

#[derive(Deserialize)]
pub(super) struct Metadata {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(super) total: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(super) per: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(super) page: Option<u64>,
}

/// Metadata numbers may arrive as strings (they echo request params).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[derive(Serialize)]
pub(super) struct LoginRequest<'a> {
    pub(super) user: LoginUser<'a>,
}

#[derive(Serialize)]
pub(super) struct LoginUser<'a> {
    pub(super) user_name: &'a str,
    pub(super) password: &'a str,
}

#[derive(Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) errors: Option<Vec<ErrorItem>>,
    #[serde(default)]
    pub(super) error: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct ErrorItem {
    #[serde(default)]
    pub(super) message: Option<Value>,
    #[serde(default)]
    pub(super) detail: Option<Value>,
}

pub(super) fn encode_data<T: Serialize + ?Sized>(
    endpoint: &str,
    data: &T,
) -> Result<Vec<u8>, ConnectorError> {
    serde_json::to_vec(&DataBody { data }).map_err(|_| ConnectorError::Protocol {
        system: System::Primero,
        endpoint: endpoint.to_string(),
        reason: "request body could not be serialised".to_string(),
    })
}

/// Parse a 2xx body. The reason names the kind and position of the problem
/// only: serde messages quote the offending value, which may be personal data.
pub(super) fn parse<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ConnectorError> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable body",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        ConnectorError::Protocol {
            system: System::Primero,
            endpoint: endpoint.to_string(),
            reason: format!("{kind} at line {} column {}", e.line(), e.column()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primero::Case;

    #[test]
    fn protocol_reason_does_not_quote_values() {
        let err = parse::<DataEnvelope<Case>>(
            "GET /api/v2/cases/{id}",
            br#"{"data":{"id":"x","owned_by":["Amina"]}}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("Amina"), "{text}");
        assert!(matches!(err, ConnectorError::Protocol { .. }));
    }
}

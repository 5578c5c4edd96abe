//! DTP pushing to the bridge's inbox, as DTP does (API key in `x-api-key`).

use serde_json::Value;

/// Header DTP puts the inbox API key in (spec §3.1).
pub const INBOX_KEY_HEADER: &str = "x-api-key";

/// The inbox's answer to a push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushResponse {
    pub status: u16,
    /// The JSON answer (`Value::Null` if it was not JSON).
    pub body: Value,
}

/// POST a message to a bridge inbox as DTP does (API key in `x-api-key`).
pub async fn push_to_inbox(
    inbox_url: &str,
    api_key: &str,
    message: &Value,
) -> Result<PushResponse, reqwest::Error> {
    let bytes = serde_json::to_vec(message).expect("a JSON value serialises");
    push_raw_to_inbox(inbox_url, Some(api_key), bytes).await
}

/// POST raw bytes (tests of malformed bodies); `api_key: None` sends no key.
pub async fn push_raw_to_inbox(
    inbox_url: &str,
    api_key: Option<&str>,
    body: Vec<u8>,
) -> Result<PushResponse, reqwest::Error> {
    let mut request = reqwest::Client::new()
        .post(inbox_url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = api_key {
        request = request.header(INBOX_KEY_HEADER, key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok(PushResponse {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

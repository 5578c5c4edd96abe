//! What a non-2xx answer means: a short reason from its body, `Retry-After`.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::lenient::{error_message_text, get_ci};

pub(super) const REASON_MAX_CHARS: usize = 200;

/// A short reason from an error body: PING `ErrorMessage`, APIM `message`,
/// or the B2C `error`/`error_description`; else the HTTP reason phrase.
pub(super) fn error_reason(bytes: &[u8], status: reqwest::StatusCode) -> String {
    let fallback = || {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
        return fallback();
    };
    let text = |key: &str| get_ci(&obj, key).and_then(|v| error_message_text(Some(v)));
    let reason = text("ErrorMessage")
        .or_else(|| text("message"))
        .or_else(|| {
            // B2C descriptions continue with correlation ids and timestamps; the first line is the point.
            let description = text("error_description")
                .map(|d| d.lines().next().unwrap_or_default().trim().to_string());
            match (text("error"), description) {
                (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                (e, d) => e.or(d),
            }
        });
    truncate(&reason.unwrap_or_else(fallback), REASON_MAX_CHARS)
}

/// At most `max` characters, on a character boundary.
pub(super) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_string(),
    }
}

/// `Retry-After` as seconds: delta-seconds or an HTTP date.
pub(super) fn parse_retry_after(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    Some(secs.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn error_reason_sources_and_truncation() {
        let s = reqwest::StatusCode::BAD_REQUEST;
        assert_eq!(error_reason(br#"{"ErrorMessage":"bad SHP"}"#, s), "bad SHP");
        assert_eq!(
            error_reason(br#"{"statusCode":401,"message":"Access denied"}"#, s),
            "Access denied"
        );
        assert_eq!(
            error_reason(
                br#"{"error":"invalid_grant","error_description":"AADB2C90225: wrong.\r\nCorrelation ID: x"}"#,
                s
            ),
            "invalid_grant: AADB2C90225: wrong."
        );
        assert_eq!(error_reason(b"<html>", s), "Bad Request");
        let long = format!(r#"{{"ErrorMessage":"{}"}}"#, "é".repeat(500));
        assert_eq!(error_reason(long.as_bytes(), s).chars().count(), 201);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("17"));
        assert_eq!(parse_retry_after(&h), Some(17));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(0));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }
}

//! What a non-2xx answer means: auth failure or status error, with Primero's
//! own short message and `Retry-After`.

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use super::client::Answer;
use super::wire::ErrorBody;
use crate::{ConnectorError, System};

const REASON_MAX_CHARS: usize = 200;

/// 2xx passes; 401 is an auth failure; anything else a status error carrying
/// Primero's own short message and `Retry-After`.
pub(super) fn check_status(endpoint: &str, answer: Answer) -> Result<Answer, ConnectorError> {
    let status = answer.status;
    if status.is_success() {
        return Ok(answer);
    }
    let reason = error_reason(status, &answer.body);
    if status == StatusCode::UNAUTHORIZED {
        return Err(ConnectorError::Auth {
            system: System::Primero,
            endpoint: endpoint.to_string(),
            reason,
        });
    }
    Err(ConnectorError::Status {
        system: System::Primero,
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        reason,
        retry_after: retry_after(&answer.headers),
    })
}

/// Primero's own words: `{"errors":[{status, resource, message, detail}]}`
/// (ErrorService; `message` may be an array, `detail` a field name or, for
/// "Invalid Record JSON", an array of JSON pointers) or Devise's
/// `{"error": …}`; otherwise the status's canonical reason. Messages and
/// pointers name fields, never their values; the raw body is never shown.
/// Bounded: a few errors, a few pointers each, [`REASON_MAX_CHARS`] in all.
pub(super) fn error_reason(status: StatusCode, body: &[u8]) -> String {
    const MAX_ERRORS: usize = 3;
    const MAX_POINTERS: usize = 5;
    /// A string, or the strings of an array, joined; `None` when neither.
    fn words(v: Option<&Value>, sep: &str, max: usize) -> Option<String> {
        match v? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Array(items) => {
                let texts: Vec<&str> = items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if texts.is_empty() {
                    return None;
                }
                let mut joined = texts[..texts.len().min(max)].join(sep);
                if texts.len() > max {
                    joined.push_str(&format!(" (+{} more)", texts.len() - max));
                }
                Some(joined)
            }
            _ => None,
        }
    }
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let from_body = parsed.and_then(|b| {
        let items: Vec<String> = b
            .errors
            .iter()
            .flatten()
            .filter_map(|e| {
                let message = words(e.message.as_ref(), "; ", MAX_POINTERS)?;
                Some(match words(e.detail.as_ref(), ", ", MAX_POINTERS) {
                    Some(detail) => format!("{message} (detail: {detail})"),
                    None => message,
                })
            })
            .collect();
        if items.is_empty() {
            return words(b.error.as_ref(), "; ", MAX_POINTERS);
        }
        let mut joined = items[..items.len().min(MAX_ERRORS)].join("; ");
        if items.len() > MAX_ERRORS {
            joined.push_str(&format!("; +{} more errors", items.len() - MAX_ERRORS));
        }
        Some(joined)
    });
    let reason =
        from_body.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    truncate(&reason, REASON_MAX_CHARS)
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Seconds, or an HTTP date turned into seconds from now.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(secs);
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some(u64::try_from((at - Utc::now()).num_seconds()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn error_reason_prefers_primero_message() {
        let body = br#"{"errors":[{"code":422,"resource":"/api/v2/cases","message":"Please enter the date in a valid format (dd-mmm-yyyy)","detail":"registration_date"}]}"#;
        assert_eq!(
            error_reason(StatusCode::UNPROCESSABLE_ENTITY, body),
            "Please enter the date in a valid format (dd-mmm-yyyy) (detail: registration_date)"
        );
        assert_eq!(
            error_reason(
                StatusCode::UNAUTHORIZED,
                br#"{"error":"Invalid User name or password."}"#
            ),
            "Invalid User name or password."
        );
        assert_eq!(
            error_reason(StatusCode::BAD_GATEWAY, b"<html>Amina Example</html>"),
            "Bad Gateway"
        );
        // ErrorService's shape for an invalid record: pointers, not values.
        let body = br#"{"errors":[{"status":422,"resource":"/api/v2/cases/x","detail":["/date_of_birth","/services_section/0/_destroy"],"message":"Invalid Record JSON"}]}"#;
        assert_eq!(
            error_reason(StatusCode::UNPROCESSABLE_ENTITY, body),
            "Invalid Record JSON (detail: /date_of_birth, /services_section/0/_destroy)"
        );
        // ActiveRecord::RecordInvalid: one error per field, message an array.
        let body = br#"{"errors":[{"status":422,"resource":"/api/v2/cases","detail":"name","message":["can't be blank","is too short"]},{"status":422,"resource":"/api/v2/cases","detail":"age","message":["must be a number"]}]}"#;
        assert_eq!(
            error_reason(StatusCode::UNPROCESSABLE_ENTITY, body),
            "can't be blank; is too short (detail: name); must be a number (detail: age)"
        );
        // Bounded however many pointers and errors come.
        let pointers: Vec<String> = (0..400).map(|i| format!("/f{i}")).collect();
        let body = json!({"errors": [{"status": 422, "message": "Invalid Record JSON", "detail": pointers}]});
        let reason = error_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            body.to_string().as_bytes(),
        );
        assert_eq!(
            reason,
            "Invalid Record JSON (detail: /f0, /f1, /f2, /f3, /f4 (+395 more))"
        );
        // Non-text details (objects) are left out rather than dumped.
        let body =
            br#"{"errors":[{"status":404,"message":"Not Found","detail":{"name":"Amina"}}]}"#;
        assert_eq!(error_reason(StatusCode::NOT_FOUND, body), "Not Found");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            error_reason(StatusCode::BAD_REQUEST, long.as_bytes()).len(),
            200
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("17"));
        assert_eq!(retry_after(&h), Some(17));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(0));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}

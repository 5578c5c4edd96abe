//! Reading a check-status answer, including the malformed body PING sends
//! (example 19).

use serde_json::Value;

use super::errors::{truncate, REASON_MAX_CHARS};
use super::lenient::{error_message_text, get_ci, scalar_text};
use super::records::{IngestionStatus, StatusParseError};
use super::wire::NO_DATA;

/// Parse a check-status body. PING's `Data` may be an array, an object, or a
/// string holding a JSON array whose items' inner `Data` is a JSON object
/// written without escaping its quotes (spec §1.B 2.1 step 6, example 19).
/// Never panics; garbage yields an error.
pub fn parse_check_status(body: &[u8]) -> Result<Vec<IngestionStatus>, StatusParseError> {
    let top = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(body).map_err(|_| StatusParseError::NotJson)?;
            parse_lenient(text).ok_or(StatusParseError::NotJson)?
        }
    };
    let data = match &top {
        Value::Object(obj) => {
            if let Some(message) = error_message_text(get_ci(obj, "ErrorMessage")) {
                return Err(StatusParseError::Remote(truncate(
                    &message,
                    REASON_MAX_CHARS,
                )));
            }
            get_ci(obj, "Data").cloned().unwrap_or(Value::Null)
        }
        Value::Array(_) => top.clone(),
        _ => {
            return Err(StatusParseError::Shape(
                "body is neither an object nor an array",
            ))
        }
    };
    let items = status_items(data, 0)?;
    Ok(items.into_iter().filter_map(status_from_item).collect())
}

fn status_items(data: Value, depth: u8) -> Result<Vec<Value>, StatusParseError> {
    match data {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items),
        Value::Object(_) => Ok(vec![data]),
        Value::String(text) => {
            let trimmed = text.trim();
            if trimmed.is_empty() || trimmed == NO_DATA {
                return Ok(Vec::new());
            }
            if depth > 0 {
                return Err(StatusParseError::Shape("Data is a string inside a string"));
            }
            let inner = parse_lenient(trimmed).ok_or(StatusParseError::NotJson)?;
            status_items(inner, depth + 1)
        }
        Value::Bool(_) | Value::Number(_) => Err(StatusParseError::Shape("Data is a scalar")),
    }
}

fn status_from_item(item: Value) -> Option<IngestionStatus> {
    let mut obj = match item {
        Value::Object(obj) => obj,
        Value::Null => return None,
        // A bare status word.
        other => {
            return Some(IngestionStatus {
                status: scalar_text(&other),
                ..IngestionStatus::default()
            })
        }
    };
    let mut take = |key: &str| -> Option<Value> {
        let actual = obj.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()?;
        obj.shift_remove(&actual)
    };
    let status = take("Status").as_ref().and_then(scalar_text);
    let message = take("Message").as_ref().and_then(scalar_text);
    let (data, data_unparsed) = match take("Data") {
        None | Some(Value::Null) => (None, false),
        Some(Value::Object(map)) => (Some(map), false),
        Some(Value::String(s)) if s.trim().is_empty() => (None, false),
        Some(Value::String(s)) => match parse_lenient(&s) {
            Some(Value::Object(map)) => (Some(map), false),
            _ => (None, true),
        },
        Some(_) => (None, true),
    };
    Some(IngestionStatus {
        status,
        message,
        data,
        data_unparsed,
        extra: obj,
    })
}

/// JSON, or JSON after [`repair_embedded_json`].
fn parse_lenient(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    // Repair is quadratic at worst; PING status bodies are small.
    if text.len() > 1 << 20 {
        return None;
    }
    let mut budget = 8 * text.len() + 1024;
    serde_json::from_str(&repair_embedded_json(text, 0, &mut budget)).ok()
}

/// Rewrites `"key":"{…}"` (an object or array written into a string without
/// escaping its quotes) as `"key":{…}`, where the bracketed part is valid JSON.
/// `budget` bounds the bytes scanned so hostile input cannot make it slow.
fn repair_embedded_json(text: &str, depth: u8, budget: &mut usize) -> String {
    let bytes = text.as_bytes();
    if depth > 4 {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < bytes.len() && *budget > 0 {
        *budget -= 1;
        if bytes[i] == b'"' && matches!(bytes[i + 1], b'{' | b'[') && after_colon(bytes, i) {
            if let Some(end) = matching_close(bytes, i + 1, budget) {
                if bytes.get(end + 1) == Some(&b'"') {
                    // All indices are at ASCII bytes, so slicing is on char boundaries.
                    let fixed = repair_embedded_json(&text[i + 1..=end], depth + 1, budget);
                    if serde_json::from_str::<Value>(&fixed).is_ok() {
                        out.push_str(&text[copied..i]);
                        out.push_str(&fixed);
                        copied = end + 2;
                        i = end + 2;
                        continue;
                    }
                }
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn after_colon(bytes: &[u8], quote: usize) -> bool {
    bytes[..quote]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b':')
}

/// Index of the bracket closing the one at `open`, skipping JSON strings.
fn matching_close(bytes: &[u8], open: usize, budget: &mut usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes[open..].iter().enumerate() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(open + offset);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn check_status_example_19() {
        // The body of example 19 as sent on the wire.
        let body = r#"{"Data": "[{\"Status\":\"Processed\",\"Data\":\"{\"progres_interoperabilityreferralid\":\"0b7f1c2e-9999-4a4a-9c9c-000000000009\"}\",\"Message\":\"OK\"}]"}"#;
        let statuses = parse_check_status(body.as_bytes()).unwrap();
        assert_eq!(statuses.len(), 1);
        let s = &statuses[0];
        assert_eq!(s.status.as_deref(), Some("Processed"));
        assert_eq!(s.message.as_deref(), Some("OK"));
        assert!(!s.data_unparsed);
        assert_eq!(
            s.data.as_ref().unwrap()["progres_interoperabilityreferralid"],
            "0b7f1c2e-9999-4a4a-9c9c-000000000009"
        );
    }

    #[test]
    fn check_status_other_shapes() {
        // Well-formed: array with an escaped inner string.
        let body = json!({"Data": [{"Status": "Failed", "Message": "x",
            "Data": "{\"progres_interoperabilityreferralid\":\"i\"}", "Other": 1}]});
        let s = parse_check_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(s[0].status.as_deref(), Some("Failed"));
        assert_eq!(
            s[0].data.as_ref().unwrap()["progres_interoperabilityreferralid"],
            "i"
        );
        assert_eq!(s[0].extra["Other"], 1);
        // Inner data as object, lower-case keys, and a bare array body.
        let body = json!([{"status": "Processed", "data": {"k": "v"}}]);
        let s = parse_check_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(s[0].data.as_ref().unwrap()["k"], "v");
        // Whole body malformed the same way (not escaped at the outer level either).
        let raw = r#"{"Data":"[{"Status":"Processed","Data":"{"id":"1"}","Message":"OK"}]"}"#;
        let s = parse_check_status(raw.as_bytes()).unwrap();
        assert_eq!(s[0].data.as_ref().unwrap()["id"], "1");
        // Empty answers.
        for empty in [
            r#"{"Data":null}"#,
            r#"{"Data":"No Data Available"}"#,
            r#"{}"#,
            r#"{"Data":[]}"#,
        ] {
            assert!(
                parse_check_status(empty.as_bytes()).unwrap().is_empty(),
                "{empty}"
            );
        }
        // Inner data beyond repair is flagged, not fatal.
        let body = json!({"Data": [{"Status": "Processed", "Data": "{not json"}]});
        let s = parse_check_status(body.to_string().as_bytes()).unwrap();
        assert!(s[0].data_unparsed && s[0].data.is_none());
        assert!(matches!(
            parse_check_status(br#"{"ErrorMessage":"Transaction not found","Data":null}"#),
            Err(StatusParseError::Remote(_))
        ));
    }

    #[test]
    fn check_status_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let fixed: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"42".to_vec(),
            b"\"text\"".to_vec(),
            b"{".to_vec(),
            b"{\"Data\":\"[{\"Data\":\"{\"".to_vec(),
            b"{\"Data\":\"[{\\\"Data\\\":\\\"{\\\"\"}".to_vec(),
            b"{\"Data\":5}".to_vec(),
            b"{\"Data\":\"\\\"nested\\\"\"}".to_vec(),
            vec![0xff, 0xfe, b'{'],
            "\"a\":\"{".repeat(10_000).into_bytes(),
            "[".repeat(100_000).into_bytes(),
            format!("{{\"Data\":\"{}\"}}", ":\"[".repeat(50_000)).into_bytes(),
            "{\"Data\":\"é\"}".as_bytes().to_vec(),
        ];
        for body in &fixed {
            let _ = parse_check_status(body);
        }
        assert!(parse_check_status(b"{").is_err());
        assert!(parse_check_status(b"{\"Data\":5}").is_err());
        let alphabet = b"{}[]\":,\\ Data0\xc3\xa9";
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        for _ in 0..2_000 {
            let len = rng.random_range(0..80);
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let _ = parse_check_status(&body);
        }
    }
}

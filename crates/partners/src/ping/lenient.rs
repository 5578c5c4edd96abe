//! Lenient readers of PING's JSON, shared by the parsers: numbers as numbers
//! or strings, keys in any case, errors without values.

use serde_json::Value;

use super::records::Row;

pub(super) fn json_error(e: &serde_json::Error) -> String {
    // serde's message can quote a value; keep only its category and position.
    format!(
        "response is not the expected JSON ({:?} at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// A non-empty `ErrorMessage` as text.
pub(super) fn error_message_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(super) fn lenient_u64(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn lenient_i64(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Case-insensitive key lookup, exact match first.
pub(super) fn get_ci<'a>(obj: &'a Row, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

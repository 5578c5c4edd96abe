//! What the inbox accepts: UTF-8 JSON, not nested absurdly deep, an object
//! with a known `request_type` and a non-empty `interventions` array of
//! objects carrying the fields each flow correlates on.
//!
//! No string or field name may hold a control character other than tab,
//! line feed and carriage return (a NUL once reached Primero inside a name).
//!
//! Reasons name the field and what is wrong with it, never its value: a
//! value may be personal data.

use axum::http::StatusCode;
use serde_json::Value;

use super::InboxKind;

/// Nesting allowed in a message. DTP rows are flat with lookup objects
/// (depth 5 at most); the limit leaves room and keeps parsing cheap.
pub const MAX_DEPTH: usize = 32;

/// Why a message was refused; answered as `{"error": code, "reason": reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
}

impl Rejection {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
        }
    }

    fn field(code: &'static str, reason: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, reason)
    }
}

/// Fields every intervention of a kind must carry as a non-empty string.
pub fn required_fields(kind: InboxKind) -> &'static [&'static str] {
    match kind {
        InboxKind::PrimeroOutgoingReferral => &["progres_interventionnumber"],
        InboxKind::PrimeroIncomingReferralDecision => {
            &["progres_orgreferralid", "progres_reviewdecision"]
        }
    }
}

/// Check a message body and route it.
pub fn validate(body: &[u8]) -> Result<(InboxKind, Value), Rejection> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "invalid-utf8",
            format!("body is not valid UTF-8 (byte {})", e.valid_up_to()),
        ));
    }
    // Before parsing, so a hostile nesting never reaches the parser.
    if exceeds_depth(body, MAX_DEPTH) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "nesting-too-deep",
            format!("body nests arrays/objects deeper than {MAX_DEPTH} levels"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote part of the input: keep category and position.
        Rejection::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!(
                "body is not valid JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(Rejection::field(
            "wrong-type",
            format!("body must be a JSON object, not {}", type_name(&value)),
        ));
    };
    let kind = match object.get("request_type") {
        None | Some(Value::Null) => {
            return Err(Rejection::field(
                "missing-field",
                "request_type is missing".into(),
            ))
        }
        Some(Value::String(s)) => InboxKind::from_request_type(s).ok_or_else(|| {
            Rejection::field(
                "unknown-request-type",
                format!(
                    "request_type must be {} or {}",
                    InboxKind::PrimeroOutgoingReferral.request_type(),
                    InboxKind::PrimeroIncomingReferralDecision.request_type()
                ),
            )
        })?,
        Some(other) => {
            return Err(Rejection::field(
                "wrong-type",
                format!("request_type must be a string, not {}", type_name(other)),
            ))
        }
    };
    let interventions = match object.get("interventions") {
        None | Some(Value::Null) => {
            return Err(Rejection::field(
                "missing-field",
                "interventions is missing".into(),
            ))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Rejection::field(
                "wrong-type",
                format!("interventions must be an array, not {}", type_name(other)),
            ))
        }
    };
    if interventions.is_empty() {
        return Err(Rejection::field(
            "empty-field",
            "interventions must not be empty".into(),
        ));
    }
    for (i, item) in interventions.iter().enumerate() {
        let Some(row) = item.as_object() else {
            return Err(Rejection::field(
                "wrong-type",
                format!(
                    "interventions[{i}] must be an object, not {}",
                    type_name(item)
                ),
            ));
        };
        for field in required_fields(kind) {
            match row.get(*field) {
                None | Some(Value::Null) => {
                    return Err(Rejection::field(
                        "missing-field",
                        format!("interventions[{i}].{field} is missing"),
                    ))
                }
                Some(Value::String(s)) if s.trim().is_empty() => {
                    return Err(Rejection::field(
                        "empty-field",
                        format!("interventions[{i}].{field} must not be empty"),
                    ))
                }
                Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(Rejection::field(
                        "wrong-type",
                        format!(
                            "interventions[{i}].{field} must be a string, not {}",
                            type_name(other)
                        ),
                    ))
                }
            }
        }
    }
    if let Some(rejection) = control_character(&value, &mut String::new()) {
        return Err(rejection);
    }
    Ok((kind, value))
}

/// A character no field has a use for: C0 controls but tab, LF and CR;
/// DEL; C1 controls.
fn is_forbidden_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7f}'
}

/// Field names in a path: plain ones as they are, others by position (a
/// hostile name is neither echoed nor allowed to garble the reason).
fn push_key(path: &mut String, key: &str, position: usize) {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str(&format!("[field {position}]"));
    }
}

/// The first string or field name holding a forbidden control character.
fn control_character(value: &Value, path: &mut String) -> Option<Rejection> {
    let found = |path: &str, what: &str, c: char| {
        let at = if path.is_empty() { "the body" } else { path };
        Rejection::field(
            "control-character",
            format!(
                "{what}{at} contains a control character (U+{:04X})",
                c as u32
            ),
        )
    };
    match value {
        Value::String(s) => s
            .chars()
            .find(|c| is_forbidden_control(*c))
            .map(|c| found(path, "", c)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let hit = control_character(item, path);
            path.truncate(len);
            hit
        }),
        Value::Object(map) => map.iter().enumerate().find_map(|(position, (key, item))| {
            let len = path.len();
            push_key(path, key, position);
            let hit = match key.chars().find(|c| is_forbidden_control(*c)) {
                Some(c) => Some(found(path, "the name of ", c)),
                None => control_character(item, path),
            };
            path.truncate(len);
            hit
        }),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether arrays/objects nest deeper than `max`, brackets inside strings
/// aside. Malformed input is left to the parser.
fn exceeds_depth(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<InboxKind, Rejection> {
        validate(&serde_json::to_vec(&v).unwrap()).map(|(k, _)| k)
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        let nested = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(exceeds_depth(nested.as_bytes(), 32));
        let in_string = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(40), "{".repeat(40));
        assert!(!exceeds_depth(in_string.as_bytes(), 32));
        let exactly = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(!exceeds_depth(exactly.as_bytes(), 32));
    }

    #[test]
    fn kinds_and_required_fields() {
        assert_eq!(
            check(json!({"request_type": "PrimeroOutgoingReferral",
                "interventions": [{"progres_interventionnumber": "803-24-PRTITV-1"}]})),
            Ok(InboxKind::PrimeroOutgoingReferral)
        );
        assert_eq!(
            check(json!({"request_type": "PrimeroIncomingReferralDecision",
                "interventions": [{"progres_orgreferralid": "c#s", "progres_reviewdecision": "125080000"}]})),
            Ok(InboxKind::PrimeroIncomingReferralDecision)
        );
        let e = check(json!({"request_type": "PrimeroIncomingReferralDecision",
            "interventions": [{"progres_orgreferralid": "c#s", "progres_reviewdecision": "125080000"},
                              {"progres_orgreferralid": "c#s", "progres_reviewdecision": 125080000}]}))
        .unwrap_err();
        assert_eq!(e.code, "wrong-type");
        assert_eq!(
            e.reason,
            "interventions[1].progres_reviewdecision must be a string, not a number"
        );
        let e = check(json!({"request_type": "PrimeroOutgoingReferral",
            "interventions": [{"progres_interventionnumber": "  "}]}))
        .unwrap_err();
        assert_eq!(e.code, "empty-field");
    }

    #[test]
    fn control_characters_are_refused_with_the_field_path() {
        let row = |given: &str| {
            json!({"request_type": "PrimeroOutgoingReferral",
                "interventions": [{"progres_interventionnumber": "803-24-PRTITV-1",
                    "individuals": {"progres_givenname": given}}]})
        };
        let e = check(row("Ami\u{0}na")).unwrap_err();
        assert_eq!(e.code, "control-character");
        assert_eq!(
            e.reason,
            "interventions[0].individuals.progres_givenname contains a control character (U+0000)"
        );
        assert!(!e.reason.contains("Ami"));
        for c in ['\u{1}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'] {
            assert_eq!(
                check(row(&format!("A{c}"))).unwrap_err().code,
                "control-character"
            );
        }
        // Free text keeps its line breaks and tabs.
        assert!(check(row("line one\r\nline\ttwo")).is_ok());
        let e = check(json!({"request_type": "PrimeroOutgoingReferral",
            "interventions": [{"progres_interventionnumber": "1", "bad\u{0}name": "x"}]}))
        .unwrap_err();
        assert_eq!(
            e.reason,
            "the name of interventions[0][field 1] contains a control character (U+0000)"
        );
    }

    #[test]
    fn reasons_never_quote_values() {
        let secret = "Zoumaxi-803-100009999";
        for body in [
            json!({"request_type": secret, "interventions": []}),
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": [{"progres_interventionnumber": [secret]}]}),
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": secret}),
        ] {
            let e = check(body).unwrap_err();
            assert!(!e.reason.contains("Zoumaxi"), "{}", e.reason);
        }
        let e = validate(format!("{{\"name\": \"{secret}\" oops").as_bytes()).unwrap_err();
        assert_eq!(e.code, "malformed-json");
        assert!(!e.reason.contains("Zoumaxi"), "{}", e.reason);
    }
}

//! Primero's record semantics: subform merge by `unique_id`, derived fields,
//! the JSON-schema checks, and the record field helpers.

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use super::wire::SimError;

/// Date fields Primero validates on write (a 422 points at the field in `detail`).
const DATE_FIELDS: &[&str] = &["date_of_birth", "registration_date"];

/// Primero treats a non-empty array whose items are all objects as a subform.
fn is_subform(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_object)
}

pub(super) fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_str() == Some("true")
}

/// The subform delete flag (RecordMergeDataHashService drops merged entries
/// that carry it; the schema allows only `true`, `false` or `null`).
const DESTROY: &str = "_destroy";

/// Keys Primero's strong parameters drop unread: `_destroy` outside a
/// subform entry, and `_delete`, which Primero does not know at all.
fn dropped_key(key: &str) -> bool {
    key == DESTROY || key == "_delete"
}

/// Apply a `PATCH` body to a record: top-level fields overwrite, subform
/// arrays merge by `unique_id` (recursively). An empty or scalar array
/// replaces, as in Primero. Returns the keys it touched. The body must have
/// passed `validate_record`.
pub fn merge_record(target: &mut Map<String, Value>, patch: Map<String, Value>) -> Vec<String> {
    let mut touched = Vec::with_capacity(patch.len());
    for (key, value) in patch {
        if dropped_key(&key) {
            continue;
        }
        match value {
            // RecordMergeDataHashService: `[]` counts as an array of hashes,
            // so over a subform it merges nothing and keeps every entry.
            Value::Array(items)
                if items.is_empty()
                    && matches!(target.get(&key), Some(Value::Array(old)) if is_subform(old)) => {}
            Value::Array(items) if is_subform(&items) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let existing_is_subform = match slot {
                    Value::Array(existing) => existing.iter().all(Value::is_object),
                    _ => false,
                };
                if !existing_is_subform {
                    *slot = Value::Array(Vec::new());
                }
                if let Value::Array(existing) = slot {
                    merge_subform(existing, items);
                }
            }
            other => {
                target.insert(key.clone(), other);
            }
        }
        touched.push(key);
    }
    touched
}

/// Merge subform entries: a known `unique_id` updates field by field (or
/// removes, with `"_destroy": true`); any other entry is appended, keeping a
/// client-chosen `unique_id` (Primero's own UI generates them) or getting a
/// new one. `_delete` is no Primero key: dropped, it deletes nothing.
pub fn merge_subform(existing: &mut Vec<Value>, incoming: Vec<Value>) {
    for entry in incoming {
        let Value::Object(mut entry) = entry else {
            continue;
        };
        let delete = entry.remove(DESTROY) == Some(Value::Bool(true));
        let position = entry
            .get("unique_id")
            .and_then(Value::as_str)
            .and_then(|uid| {
                existing
                    .iter()
                    .position(|e| e.get("unique_id").and_then(Value::as_str) == Some(uid))
            });
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => {
                if let Value::Object(target) = &mut existing[i] {
                    merge_record(target, entry);
                }
            }
            (None, true) => {}
            (None, false) => {
                let mut fresh = Map::new();
                merge_record(&mut fresh, entry);
                if !fresh.get("unique_id").is_some_and(Value::is_string) {
                    fresh.insert("unique_id".into(), json!(new_uuid()));
                }
                existing.push(Value::Object(fresh));
            }
        }
    }
}

pub(super) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(super) fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

pub(super) fn str_list(m: &Map<String, Value>, key: &str) -> Vec<String> {
    match m.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Primero derives `associated_user_names` (owner + assigned users) itself.
pub(super) fn recompute_associated(case: &mut Map<String, Value>) {
    let mut names: Vec<String> = Vec::new();
    if let Some(owner) = str_field(case, "owned_by") {
        names.push(owner.to_string());
    }
    for name in str_list(case, "assigned_user_names") {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    case.insert("associated_user_names".into(), json!(names));
}

/// The part of Primero's record JSON schema the simulator checks (date
/// fields, the subform `_destroy` flag); a failure lists the JSON pointer
/// of every bad value, as RecordJsonValidatorService does.
pub(super) fn validate_record(data: &Map<String, Value>) -> Result<(), SimError> {
    let mut pointers = Vec::new();
    for field in DATE_FIELDS {
        if let Some(v) = data.get(*field) {
            let ok = match v {
                Value::Null => true,
                Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
                _ => false,
            };
            if !ok {
                pointers.push(format!("/{field}"));
            }
        }
    }
    for (key, value) in data {
        let Value::Array(items) = value else { continue };
        if !is_subform(items) {
            continue;
        }
        for (i, item) in items.iter().enumerate() {
            let bad = item
                .get(DESTROY)
                .is_some_and(|v| !matches!(v, Value::Bool(_) | Value::Null));
            if bad {
                pointers.push(format!("/{key}/{i}/{DESTROY}"));
            }
        }
    }
    if pointers.is_empty() {
        Ok(())
    } else {
        Err(SimError::InvalidJson { pointers })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::primero::tests::{obj, services};
    use crate::primero::{PrimeroSim, SimError};

    #[test]
    fn merge_updates_appends_and_deletes_by_unique_id() {
        let mut case = obj(json!({
            "name_first": "Old",
            "language": ["a", "b"],
            "services_section": [
                {"unique_id": "s1", "service_type": "legal_support", "unhcr_referral_status": "pending"},
                {"unique_id": "s2", "service_type": "alternative_care"}
            ]
        }));
        let touched = merge_record(
            &mut case,
            obj(json!({
                "name_first": "New",
                "language": ["c"],
                "services_section": [
                    {"unique_id": "s1", "unhcr_referral_status": "accepted"},
                    {"unique_id": "s2", "_destroy": true},
                    {"service_type": "health"},
                    {"unique_id": "client-chosen", "service_type": "education"},
                    {"unique_id": "unknown", "_destroy": true}
                ]
            })),
        );
        assert_eq!(touched, vec!["name_first", "language", "services_section"]);
        assert_eq!(case["name_first"], "New");
        // A scalar array replaces, it is not a subform.
        assert_eq!(case["language"], json!(["c"]));
        let s = case["services_section"].as_array().unwrap();
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0]["unique_id"], "s1");
        assert_eq!(
            s[0]["service_type"], "legal_support",
            "untouched field kept"
        );
        assert_eq!(s[0]["unhcr_referral_status"], "accepted");
        assert_eq!(s[1]["service_type"], "health");
        let new_uid = s[1]["unique_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(new_uid).is_ok(), "{new_uid}");
        assert_eq!(s[2]["unique_id"], "client-chosen");
        assert!(s.iter().all(|e| e.get("_destroy").is_none()));
    }

    #[test]
    fn delete_is_no_primero_key_and_destroy_must_be_a_boolean() {
        let sim = PrimeroSim::default();
        let id = sim
            .insert_case(obj(json!({"services_section": [
                {"unique_id": "s1", "service_type": "x"},
                {"unique_id": "s2", "service_type": "y"}
            ]})))
            .unwrap();
        // `_delete` is dropped unread: the entry stays, without the key.
        let after = sim
            .update_case(
                &id,
                obj(json!({"services_section": [{"unique_id": "s1", "_delete": true}]})),
            )
            .unwrap();
        assert_eq!(services(&after).len(), 2);
        assert!(services(&after)[0].get("_delete").is_none());
        // `_destroy: false` keeps; anything but a boolean or null is refused
        // with a pointer to it, and nothing changes.
        let kept = sim
            .update_case(
                &id,
                obj(json!({"services_section": [{"unique_id": "s1", "_destroy": false}]})),
            )
            .unwrap();
        assert_eq!(services(&kept).len(), 2);
        let bad = sim.update_case(
            &id,
            obj(json!({"services_section": [
                {"unique_id": "s2", "_destroy": true},
                {"unique_id": "s1", "_destroy": "yes"}
            ]})),
        );
        assert_eq!(
            bad,
            Err(SimError::InvalidJson {
                pointers: vec!["/services_section/1/_destroy".into()]
            })
        );
        assert_eq!(services(&sim.case(&id).unwrap()).len(), 2);
        let gone = sim
            .update_case(
                &id,
                obj(json!({"services_section": [{"unique_id": "s2", "_destroy": true}]})),
            )
            .unwrap();
        assert_eq!(services(&gone).len(), 1);
        assert_eq!(services(&gone)[0]["unique_id"], "s1");
    }

    #[test]
    fn empty_array_keeps_a_subform_and_empties_a_list() {
        let mut case = obj(json!({
            "services_section": [{"unique_id": "s1"}],
            "language": ["language1"],
        }));
        merge_record(
            &mut case,
            obj(json!({"services_section": [], "language": []})),
        );
        assert_eq!(case["services_section"], json!([{"unique_id": "s1"}]));
        assert_eq!(case["language"], json!([]));
    }
}

//! The API user's role as Primero v2.11+ enforces it, and the record
//! validations of `RecordJsonValidatorService`. Everything here is silent in
//! Primero except the validations: a filter on a field the role may not read
//! is dropped (the whole scope comes back), a field it may not write is
//! stripped from the write (answer 200 without it), a referral to another
//! user is left out of the list. Read from primeroIMS/primero:
//! `app/controllers/api/v2/concerns/record.rb`,
//! `app/services/search_filter_service.rb`,
//! `app/services/permitted_field_service.rb`,
//! `app/services/record_json_validator_service.rb`,
//! `app/models/concerns/transitionable.rb`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// Which case fields the API user's role may read and write, and whether
/// referrals made to other users are visible to it.
///
/// Fields are named as in the record: `unhcr_individual_no` for a top-level
/// field, `services_section.progres_interventionnumber` for a field of the
/// services subform. The default is a role configured correctly for the
/// bridge: everything readable, writable and visible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimRole {
    unreadable: BTreeSet<String>,
    unwritable: BTreeSet<String>,
    hides_others_referrals: bool,
}

impl SimRole {
    /// The role the bridge needs (same as `default()`).
    pub fn bridge() -> Self {
        Self::default()
    }

    /// The role may not read `field`: a filter on it is dropped and the
    /// field is left out of every case it is shown.
    pub fn without_read(mut self, field: impl Into<String>) -> Self {
        self.unreadable.insert(field.into());
        self
    }

    /// The role may not write `field`: it is stripped from creates and
    /// updates, which still answer 200.
    pub fn without_write(mut self, field: impl Into<String>) -> Self {
        self.unwritable.insert(field.into());
        self
    }

    /// Referrals of cases the API user does not own are listed only when
    /// made to the API user itself and still open (`in_progress`,
    /// `accepted`), as `Transitionable#referrals_to_user` does for a role
    /// without `view_referrals` in its scope.
    pub fn without_others_referrals(mut self) -> Self {
        self.hides_others_referrals = true;
        self
    }

    pub fn can_read(&self, field: &str) -> bool {
        !self.unreadable.contains(field)
    }

    pub fn can_write(&self, field: &str) -> bool {
        !self.unwritable.contains(field)
    }

    /// Whether referrals made to other users are listed.
    pub fn sees_others_referrals(&self) -> bool {
        !self.hides_others_referrals
    }

    /// Leave out what the role may not read (Primero renders only permitted
    /// fields).
    pub(super) fn redact(&self, record: &mut Map<String, Value>) {
        strip(record, &self.unreadable);
    }

    /// Strip what the role may not write (`record_params` selects only
    /// permitted fields).
    pub(super) fn strip_unwritable(&self, record: &mut Map<String, Value>) {
        strip(record, &self.unwritable);
    }
}

fn strip(record: &mut Map<String, Value>, fields: &BTreeSet<String>) {
    for field in fields {
        match field.split_once('.') {
            None => {
                record.remove(field);
            }
            Some((subform, inner)) => {
                if let Some(Value::Array(entries)) = record.get_mut(subform) {
                    for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                        entry.remove(inner);
                    }
                }
            }
        }
    }
}

/// `PermittedFieldService::UUID_REGEX`: lowercase only.
pub(super) fn is_lowercase_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Option lists of the select fields the simulator validates, by record
/// field (`services_section.<field>` for the services subform). Primero
/// builds an `enum` from each field's options; the deployment's own lookups
/// (service types, languages) are not known here and are not checked.
pub(super) fn default_lookups() -> BTreeMap<String, Vec<String>> {
    let table: &[(&str, &[&str])] = &[
        ("status", &["open", "closed", "transferred", "identified"]),
        (
            "sex",
            &["female", "male", "other_b25f252", "unknown_4b34795"],
        ),
        (
            "services_section.service_response_type",
            &["care_plan", "action_plan", "service_provision"],
        ),
        (
            "services_section.service_implemented",
            &["not_implemented", "implemented"],
        ),
        (
            "services_section.service_referral",
            &["external_referral", "internal_referral"],
        ),
        (
            "services_section.unhcr_referral_status",
            &["pending", "accepted", "rejected"],
        ),
    ];
    table
        .iter()
        .map(|(field, values)| {
            (
                field.to_string(),
                values.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

/// JSON pointers (as `RecordJsonValidatorService` reports them in `detail`)
/// of the values a write may not carry: a non-UUID `id` or subform
/// `unique_id`, a select value outside its options (`null` is allowed).
pub(super) fn invalid_pointers(
    record: &Map<String, Value>,
    lookups: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut pointers = Vec::new();
    if let Some(id) = record.get("id") {
        if !id.as_str().is_some_and(is_lowercase_uuid) {
            pointers.push("/id".to_string());
        }
    }
    let allowed = |field: &str, value: &Value| match (lookups.get(field), value) {
        (None, _) | (_, Value::Null) => true,
        (Some(options), Value::String(s)) => options.contains(s),
        (Some(options), Value::Array(items)) => items
            .iter()
            .all(|i| i.as_str().is_some_and(|s| options.contains(&s.to_string()))),
        (Some(_), _) => false,
    };
    for (key, value) in record {
        match value {
            Value::Array(entries) if entries.iter().any(Value::is_object) => {
                for (i, entry) in entries.iter().enumerate() {
                    let Some(entry) = entry.as_object() else {
                        continue;
                    };
                    if let Some(uid) = entry.get("unique_id") {
                        if !uid.as_str().is_some_and(is_lowercase_uuid) {
                            pointers.push(format!("/{key}/{i}/unique_id"));
                        }
                    }
                    for (inner, v) in entry {
                        if !allowed(&format!("{key}.{inner}"), v) {
                            pointers.push(format!("/{key}/{i}/{inner}"));
                        }
                    }
                }
            }
            other => {
                if !allowed(key, other) {
                    pointers.push(format!("/{key}"));
                }
            }
        }
    }
    pointers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn uuid_must_be_lowercase() {
        assert!(is_lowercase_uuid("3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2"));
        assert!(!is_lowercase_uuid("3E2D1C0B-BBBB-4CCC-9DDD-0000000000B2"));
        assert!(!is_lowercase_uuid("3e2d1c0bbbbb4ccc9ddd0000000000b2"));
        assert!(!is_lowercase_uuid("svc-1"));
    }

    #[test]
    fn strips_top_level_and_subform_fields() {
        let role = SimRole::bridge()
            .without_write("unhcr_individual_no")
            .without_write("services_section.progres_interventionnumber");
        let mut case = obj(json!({
            "unhcr_individual_no": "803-100000519",
            "name_first": "A",
            "services_section": [{"service_type": "x", "progres_interventionnumber": "803-24-PRTITV-1"}]
        }));
        role.strip_unwritable(&mut case);
        assert_eq!(
            Value::Object(case),
            json!({"name_first": "A", "services_section": [{"service_type": "x"}]})
        );
        assert!(SimRole::default().can_read("unhcr_individual_no"));
        assert!(SimRole::default().sees_others_referrals());
    }

    #[test]
    fn pointers_name_every_invalid_value() {
        let record = obj(json!({
            "id": "NOT-A-UUID",
            "sex": "intersex_x",
            "status": null,
            "services_section": [
                {"unique_id": "3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2", "unhcr_referral_status": "on_hold"},
                {"unique_id": "svc-1", "service_response_type": "service_provision"}
            ]
        }));
        let mut pointers = invalid_pointers(&record, &default_lookups());
        pointers.sort();
        assert_eq!(
            pointers,
            vec![
                "/id",
                "/services_section/0/unhcr_referral_status",
                "/services_section/1/unique_id",
                "/sex",
            ]
        );
    }
}

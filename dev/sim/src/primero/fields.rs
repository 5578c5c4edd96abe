//! `fields=a,b,…` on `GET /api/v2/cases` and `GET /api/v2/cases/:id`, as
//! Primero's `FieldSelectionService` reads it: only the listed fields the
//! role may read are rendered, plus `id` and `last_updated_at`, which
//! `api/v2/records/_record` and `RecordDataService#data` always add.
//! (`fields=short`, the list view's summary, is not simulated: every field
//! is answered then.)

use serde_json::{Map, Value};

/// The fields asked for, if the query names any.
pub(super) fn requested(query: Option<&str>) -> Option<Vec<String>> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "fields")
        .last()
        .map(|(_, v)| {
            v.split(',')
                .map(|f| f.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.iter().all(String::is_empty) && f != &["short"])
}

/// A rendered case cut down to the requested fields.
pub(super) fn select(case: Value, fields: Option<&[String]>) -> Value {
    let (Some(fields), Value::Object(case)) = (fields, &case) else {
        return case;
    };
    let kept: Map<String, Value> = case
        .iter()
        .filter(|(k, _)| {
            matches!(k.as_str(), "id" | "last_updated_at") || fields.iter().any(|f| f == *k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_requested_fields_and_the_ids_are_answered() {
        let case = json!({"id": "r1", "name_first": "A", "status": "open", "last_updated_at": "t"});
        let fields = requested(Some("per=5&fields=status,case_id")).unwrap();
        assert_eq!(
            select(case.clone(), Some(&fields)),
            json!({"id": "r1", "status": "open", "last_updated_at": "t"})
        );
        assert_eq!(requested(Some("fields=short")), None);
        assert_eq!(requested(Some("per=5")), None);
        assert_eq!(select(case.clone(), None), case);
    }
}

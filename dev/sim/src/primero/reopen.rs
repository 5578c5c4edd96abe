//! Closing and reopening: Primero's save callbacks on a case update.

use serde_json::{json, Map, Value};

use super::merge::{str_field, truthy};

const STATUS_OPEN: &str = "open";
const STATUS_CLOSED: &str = "closed";

/// What Primero's save callbacks compare a case with before a save
/// (`app/models/concerns/reopenable.rb`, `workflow.rb`, `serviceable.rb`).
pub(super) struct BeforeSave {
    status: Option<String>,
    services: usize,
    reopened: Option<Value>,
}

fn services_count(case: &Map<String, Value>) -> usize {
    case.get("services_section")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

impl BeforeSave {
    pub(super) fn of(case: &Map<String, Value>) -> Self {
        Self {
            status: str_field(case, "status").map(str::to_string),
            services: services_count(case),
            reopened: case.get("case_status_reopened").cloned(),
        }
    }

    /// Primero's callbacks on an update, in its order; returns the keys they
    /// changed. A closed, enabled case that gets a new service is reopened
    /// (`reopen_record`, `services_section_added?`); a case newly closed gets
    /// its `date_closure`; closed → open with `case_status_reopened` logs who
    /// reopened it when (`reopened_logs`, newest first); a reopened case's
    /// workflow is `reopened`.
    pub(super) fn reopenable(
        &self,
        case: &mut Map<String, Value>,
        user: &str,
        now: &str,
    ) -> Vec<String> {
        let mut touched = Vec::new();
        let enabled = case.get("record_state").is_none_or(truthy);
        if str_field(case, "status") == Some(STATUS_CLOSED)
            && enabled
            && services_count(case) > self.services
        {
            case.insert("status".into(), json!(STATUS_OPEN));
            case.insert("case_status_reopened".into(), json!(true));
            touched.extend(["status".to_string(), "case_status_reopened".to_string()]);
        }
        let status = str_field(case, "status").map(str::to_string);
        let was = self.status.as_deref();
        if was == Some(STATUS_OPEN)
            && status.as_deref() == Some(STATUS_CLOSED)
            && case.get("date_closure").is_none_or(Value::is_null)
        {
            case.insert("date_closure".into(), json!(&now[..10]));
            touched.push("date_closure".into());
        }
        let reopened = case.get("case_status_reopened").is_some_and(truthy);
        if reopened && was == Some(STATUS_CLOSED) && status.as_deref() == Some(STATUS_OPEN) {
            let log = json!({"reopened_date": now, "reopened_user": user});
            match case.get_mut("reopened_logs") {
                Some(Value::Array(logs)) => logs.insert(0, log),
                _ => {
                    case.insert("reopened_logs".into(), json!([log]));
                }
            }
            touched.push("reopened_logs".into());
        }
        let changed =
            was != status.as_deref() || self.reopened.as_ref() != case.get("case_status_reopened");
        if changed && reopened && status.as_deref() == Some(STATUS_OPEN) {
            case.insert("workflow".into(), json!("reopened"));
            touched.push("workflow".into());
        }
        touched
    }
}

//! Flags on cases: the flag record, `Flaggable#add_flag!`, and the
//! `/api/v2/cases/{id}/flags` handlers.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::auth::ApiUser;
use super::merge::str_field;
use super::state::{PrimeroSim, SimState};
use super::wire::{parse_data, SimError};

impl PrimeroSim {
    /// The flags of a case, oldest first.
    pub fn flags(&self, case_id: &str) -> Vec<SimFlag> {
        self.lock()
            .flags
            .iter()
            .filter(|f| f.record_id == case_id)
            .cloned()
            .collect()
    }
}

/// A flag on a case (`app/models/flag.rb`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimFlag {
    pub id: u64,
    pub record_id: String,
    pub record_type: String,
    pub date: String,
    pub message: String,
    pub flagged_by: String,
    pub removed: bool,
    pub unflag_message: Option<String>,
    pub created_at: String,
    pub system_generated_followup: bool,
    pub unflagged_by: Option<String>,
    pub unflagged_date: Option<String>,
}

impl SimState {
    /// `Flaggable#add_flag!`: the flag, then the case saved with `flagged`
    /// recalculated. `message` and `date` are required (`Flag` validations);
    /// an empty date is today.
    fn add_flag(
        &mut self,
        case_id: &str,
        data: &Map<String, Value>,
        user: &str,
    ) -> Result<SimFlag, SimError> {
        if self.case(case_id).is_none() {
            return Err(SimError::CaseNotFound);
        }
        let message = str_field(data, "message").unwrap_or_default().trim();
        if message.is_empty() {
            return Err(SimError::invalid("message", "errors.models.flags.message"));
        }
        let now = self.clock.tick_string();
        let date = match str_field(data, "date").map(str::trim) {
            None | Some("") => now[..10].to_string(),
            Some(d) if NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() => d.to_string(),
            Some(_) => return Err(SimError::invalid("date", "errors.models.flags.date")),
        };
        let flag = SimFlag {
            id: self.flags.len() as u64 + 1,
            record_id: case_id.to_string(),
            record_type: "cases".to_string(),
            date,
            message: message.to_string(),
            flagged_by: user.to_string(),
            removed: false,
            unflag_message: None,
            created_at: now.clone(),
            system_generated_followup: false,
            unflagged_by: None,
            unflagged_date: None,
        };
        self.flags.push(flag.clone());
        let count = self
            .flags
            .iter()
            .filter(|f| f.record_id == case_id && !f.removed)
            .count();
        self.touch_case(case_id, &now, |case| {
            case.insert("flagged".into(), json!(count > 0));
            case.insert("flag_count".into(), json!(count));
        });
        Ok(flag)
    }
}

/// `app/views/api/v2/flags/_flag.json.jbuilder`: the flag, a little of its
/// record, and the record's changed fields.
fn flag_view(flag: &SimFlag, case: &Map<String, Value>) -> Value {
    let mut view = serde_json::to_value(flag).unwrap_or_default();
    if let Value::Object(v) = &mut view {
        for key in ["short_id", "owned_by", "owned_by_agency_id"] {
            v.insert(key.into(), case.get(key).cloned().unwrap_or(Value::Null));
        }
        v.insert(
            "name".into(),
            case.get("name").cloned().unwrap_or(Value::Null),
        );
        v.insert("record_access_denied".into(), json!(false));
        v.insert(
            "record".into(),
            json!({
                "id": flag.record_id,
                "flag_count": case.get("flag_count"),
                "flagged": case.get("flagged"),
                "last_updated_at": case.get("last_updated_at"),
            }),
        );
    }
    view
}

pub(super) async fn list_flags(State(sim): State<PrimeroSim>, Path(id): Path<String>) -> Response {
    let st = sim.lock();
    let Some(case) = st.case(&id) else {
        return SimError::CaseNotFound.into_response(&format!("/api/v2/cases/{id}/flags"));
    };
    let data: Vec<Value> = st
        .flags
        .iter()
        .filter(|f| f.record_id == id)
        .map(|f| flag_view(f, case))
        .collect();
    Json(json!({ "data": data })).into_response()
}

pub(super) async fn create_flag(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}/flags");
    let mut st = sim.lock();
    if st.case(&id).is_none() {
        return SimError::CaseNotFound.into_response(&resource);
    }
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    let flag = match st.add_flag(&id, &data, &user) {
        Ok(f) => f,
        Err(e) => return e.into_response(&resource),
    };
    // FlagsController#status: 204 (no body) when the client sent an id.
    let response = if data.get("id").is_some_and(|v| !v.is_null()) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let case = st.case(&id).cloned().unwrap_or_default();
        Json(json!({ "data": flag_view(&flag, &case) })).into_response()
    };
    drop(st);
    sim.after_write("POST", &resource);
    response
}

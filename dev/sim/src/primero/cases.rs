//! Cases: driving methods, creation and update in the store, and the
//! `/api/v2/cases` handlers.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::auth::ApiUser;
use super::faults::{Fault, HandlerFault};
use super::merge::{merge_record, new_uuid, recompute_associated, str_field, validate_record};
use super::query::{page_bounds, parse_case_filter, sort_key, SortKey};
use super::reopen::BeforeSave;
use super::state::{PrimeroSim, SimState};
use super::wire::{parse_data, SimError};
use crate::people::Person;

/// The module the bridge creates cases in.
pub const CP_MODULE: &str = "primeromodule-cp";

impl PrimeroSim {
    /// Create a case as `POST /api/v2/cases` would (ids, timestamps, owner =
    /// the API user unless `owned_by` is given). Returns the record id.
    pub fn insert_case(&self, data: Map<String, Value>) -> Result<String, SimError> {
        let mut st = self.lock();
        let user = st.config.user_name.clone();
        st.create_case(data, &user)
    }

    /// Create a case for a generated person (see [`case_for_person`]).
    pub fn seed_person(&self, person: &Person, services: Vec<Map<String, Value>>) -> String {
        let data = case_for_person(person, services);
        // Cannot fail: no client id, and the person's fields are valid.
        self.insert_case(data)
            .unwrap_or_else(|e| panic!("seeding a generated person failed: {e}"))
    }

    /// Every case, in creation order.
    pub fn cases(&self) -> Vec<Value> {
        self.lock()
            .cases
            .iter()
            .map(|c| Value::Object(c.clone()))
            .collect()
    }

    pub fn case(&self, id: &str) -> Option<Value> {
        let st = self.lock();
        st.case_index
            .get(id)
            .map(|&i| Value::Object(st.cases[i].clone()))
    }

    pub fn case_count(&self) -> usize {
        self.lock().cases.len()
    }

    /// Record ids of the cases with this `unhcr_individual_no`.
    pub fn find_by_individual_no(&self, unhcr_individual_no: &str) -> Vec<String> {
        self.lock()
            .cases
            .iter()
            .filter(|c| str_field(c, "unhcr_individual_no") == Some(unhcr_individual_no))
            .filter_map(|c| str_field(c, "id").map(str::to_string))
            .collect()
    }

    /// Edit a case as a caseworker would (`PATCH` merge semantics). Returns
    /// the whole case after the change.
    pub fn update_case(&self, id: &str, patch: Map<String, Value>) -> Result<Value, SimError> {
        let mut st = self.lock();
        st.patch_case(id, patch)?;
        Ok(st
            .case(id)
            .map(|c| Value::Object(c.clone()))
            .unwrap_or(Value::Null))
    }
}

/// Realistic case fields for a generated person (an intake as created from
/// proGres): ids, names, date of birth, sex, phone, consent, CP module.
pub fn case_for_person(person: &Person, services: Vec<Map<String, Value>>) -> Map<String, Value> {
    let sex = if person.sex_code == 125_080_001 {
        "male"
    } else {
        "female"
    };
    let mut data = Map::new();
    data.insert("unhcr_individual_no".into(), json!(person.progres_id));
    data.insert("unhcr_id_no".into(), json!(person.registration_group));
    data.insert("name_first".into(), json!(person.given_name));
    data.insert("name_middle".into(), json!(person.middle_name));
    data.insert("name_last".into(), json!(person.family_name));
    data.insert("date_of_birth".into(), json!(person.date_of_birth));
    data.insert("sex".into(), json!(sex));
    data.insert("telephone_current".into(), json!(person.phone));
    data.insert("module_id".into(), json!(CP_MODULE));
    data.insert("status".into(), json!("open"));
    data.insert("consent_for_services".into(), json!(true));
    data.insert("disclosure_other_orgs".into(), json!(true));
    if !services.is_empty() {
        data.insert(
            "services_section".into(),
            Value::Array(services.into_iter().map(Value::Object).collect()),
        );
    }
    data
}

impl SimState {
    fn create_case(
        &mut self,
        data: Map<String, Value>,
        api_user: &str,
    ) -> Result<String, SimError> {
        validate_record(&data)?;
        let id = match data.get("id") {
            Some(Value::String(id)) if !id.is_empty() => {
                if self.case_index.contains_key(id) {
                    return Err(SimError::Conflict);
                }
                id.clone()
            }
            Some(Value::Null) | None => new_uuid(),
            Some(_) => return Err(SimError::invalid_json("/id".to_string())),
        };
        let mut case = Map::new();
        merge_record(&mut case, data);
        let case_id = match str_field(&case, "case_id") {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => new_uuid(),
        };
        let short: String = {
            let chars: Vec<char> = case_id.chars().collect();
            chars[chars.len().saturating_sub(7)..].iter().collect()
        };
        let now = self.clock.tick_string();
        case.insert("id".into(), json!(id));
        case.insert("case_id".into(), json!(case_id));
        case.insert("case_id_display".into(), json!(short));
        case.insert("short_id".into(), json!(short));
        case.insert("created_at".into(), json!(now));
        // `Historical#creation_fields_for`: the user the request came from.
        case.insert("created_by".into(), json!(api_user));
        case.insert("last_updated_at".into(), json!(now));
        if str_field(&case, "owned_by").is_none_or(str::is_empty) {
            case.insert("owned_by".into(), json!(api_user));
        }
        if !case.get("status").is_some_and(Value::is_string) {
            case.insert("status".into(), json!("open"));
        }
        case.entry("record_state").or_insert(json!(true));
        recompute_associated(&mut case);
        self.case_index.insert(id.clone(), self.cases.len());
        self.cases.push(case);
        self.index_individual(self.cases.len() - 1);
        Ok(id)
    }

    /// Returns the keys the patch touched.
    fn patch_case(
        &mut self,
        id: &str,
        mut patch: Map<String, Value>,
    ) -> Result<Vec<String>, SimError> {
        validate_record(&patch)?;
        // The record id is the key; Primero ignores attempts to change it.
        patch.remove("id");
        let now = self.clock.tick_string();
        let user = self.config.user_name.clone();
        let case = self.case_mut(id).ok_or(SimError::CaseNotFound)?;
        let before = BeforeSave::of(case);
        let mut touched = merge_record(case, patch);
        touched.extend(before.reopenable(case, &user, &now));
        case.insert("last_updated_at".into(), json!(now));
        recompute_associated(case);
        touched.push("last_updated_at".to_string());
        Ok(touched)
    }
}

pub(super) async fn list_cases(
    State(sim): State<PrimeroSim>,
    fault: Option<Extension<HandlerFault>>,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = super::fields::requested(query.as_deref());
    // Under the lock only what needs the cases; the answer is built after,
    // so one listing does not hold every other request up (Primero's web
    // workers serve requests side by side).
    let (filter, total, page) = {
        let mut st = sim.lock();
        let filter = parse_case_filter(query.as_deref(), st.config.max_per, &st.config.role);
        let candidates = st.candidates(&filter);
        let st = &*st;
        let mut hits: Vec<(SortKey, &Map<String, Value>)> = candidates
            .into_iter()
            .map(|i| &st.cases[i])
            .filter(|c| filter.matches(c))
            .map(|c| (sort_key(c, &filter.order_by), c))
            .collect();
        // No tie-breaker, as in Primero's SQL search: rows sharing a sort value
        // come in an order that may differ from one request to the next, so
        // paging through ties by page number can repeat some and skip others.
        rand::seq::SliceRandom::shuffle(hits.as_mut_slice(), &mut rand::rng());
        hits.sort_by(|a, b| a.0.cmp(&b.0));
        if filter.descending {
            hits.reverse();
        }
        let total = hits.len();
        let (mut start, mut end) = page_bounds(total, filter.page, filter.per);
        match fault.map(|Extension(HandlerFault(f))| f) {
            Some(Fault::RepeatPage) if filter.page > 1 => {
                (start, end) = page_bounds(total, filter.page - 1, filter.per);
            }
            Some(Fault::SkipRows(n)) => start = start.saturating_add(n).min(end),
            _ => {}
        }
        let page: Vec<Value> = hits[start..end]
            .iter()
            .map(|(_, c)| st.shown((*c).clone()))
            .collect();
        (filter, total, page)
    };
    let data: Vec<Value> = page
        .into_iter()
        .map(|c| super::fields::select(c, fields.as_deref()))
        .collect();
    Json(json!({
        "data": data,
        "metadata": { "total": total, "per": filter.per, "page": filter.page },
    }))
    .into_response()
}

pub(super) async fn create_case(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    body: Bytes,
) -> Response {
    const RESOURCE: &str = "/api/v2/cases";
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(RESOURCE),
    };
    let client_id = data.get("id").is_some_and(Value::is_string);
    let mut st = sim.lock();
    let data = match st.api_write(data) {
        Ok(d) => d,
        Err(e) => return e.into_response(RESOURCE),
    };
    let response = match st.create_case(data, &user) {
        Ok(_) if client_id => StatusCode::NO_CONTENT.into_response(),
        Ok(id) => {
            let case = st.case(&id).cloned().unwrap_or_default();
            Json(json!({ "data": st.shown(case) })).into_response()
        }
        Err(e) => return e.into_response(RESOURCE),
    };
    drop(st);
    sim.after_write("POST", RESOURCE);
    response
}

pub(super) async fn get_case(
    State(sim): State<PrimeroSim>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let st = sim.lock();
    let fields = super::fields::requested(query.as_deref());
    match st.case(&id) {
        Some(case) => Json(json!({
            "data": super::fields::select(st.shown(case.clone()), fields.as_deref())
        }))
        .into_response(),
        None => SimError::CaseNotFound.into_response(&format!("/api/v2/cases/{id}")),
    }
}

pub(super) async fn patch_case(
    State(sim): State<PrimeroSim>,
    fault: Option<Extension<HandlerFault>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}");
    let mut st = sim.lock();
    if st.case(&id).is_none() {
        return SimError::CaseNotFound.into_response(&resource);
    }
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    if matches!(fault, Some(Extension(HandlerFault(Fault::NoopWrite)))) {
        return Json(json!({ "data": { "id": id } })).into_response();
    }
    let data = match st.api_write(data) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    let response = match st.patch_case(&id, data) {
        Ok(touched) => {
            // Primero answers with the id and the fields the update changed.
            let case = st.case(&id).cloned().unwrap_or_default();
            let case = match st.shown(case) {
                Value::Object(c) => c,
                _ => Map::new(),
            };
            let mut changed = Map::new();
            changed.insert("id".into(), json!(id));
            for key in touched {
                if let Some(v) = case.get(&key) {
                    changed.insert(key, v.clone());
                }
            }
            Json(json!({ "data": changed })).into_response()
        }
        Err(e) => return e.into_response(&resource),
    };
    drop(st);
    sim.after_write("PATCH", &resource);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primero::tests::{obj, services};

    #[test]
    fn patch_bumps_last_updated_and_keeps_id() {
        let sim = PrimeroSim::default();
        let id = sim
            .insert_case(obj(json!({"services_section": [{"service_type": "x"}]})))
            .unwrap();
        let before = sim.case(&id).unwrap();
        let uid = services(&before)[0]["unique_id"]
            .as_str()
            .unwrap()
            .to_string();
        let after = sim
            .update_case(
                &id,
                obj(json!({"id": "other", "services_section": [{"unique_id": uid, "service_type": "y"}]})),
            )
            .unwrap();
        assert_eq!(after["id"], json!(id));
        assert_eq!(services(&after).len(), 1);
        assert_eq!(services(&after)[0]["service_type"], "y");
        // Whole seconds: the patch may share its second with the insert.
        assert!(
            after["last_updated_at"].as_str().unwrap()
                >= before["last_updated_at"].as_str().unwrap()
        );
        assert_eq!(after["created_at"], before["created_at"]);
        assert_eq!(
            sim.update_case("nope", Map::new()),
            Err(SimError::CaseNotFound)
        );
    }

    #[test]
    fn insert_assigns_server_fields() {
        let sim = PrimeroSim::default();
        let id = sim
            .insert_case(obj(
                json!({"case_id": "3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2"}),
            ))
            .unwrap();
        let case = sim.case(&id).unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(case["short_id"], "00000b2");
        assert_eq!(case["case_id_display"], "00000b2");
        assert_eq!(case["owned_by"], "bridge_api");
        assert_eq!(case["status"], "open");
        assert_eq!(case["associated_user_names"], json!(["bridge_api"]));
        assert!(case["created_at"].as_str().unwrap().ends_with('Z'));
        let dup = sim.insert_case(obj(json!({"id": id})));
        assert_eq!(dup, Err(SimError::Conflict));
        let bad = sim.insert_case(obj(json!({"date_of_birth": "15/03/2012"})));
        assert_eq!(
            bad,
            Err(SimError::InvalidJson {
                pointers: vec!["/date_of_birth".into()]
            })
        );
    }
}

//! Referrals: driving methods, the state machine (spec §2.4), and the
//! `/api/v2/cases/{id}/referrals` handlers.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::ApiUser;
use super::faults::{Fault, HandlerFault};
use super::merge::{new_uuid, recompute_associated, str_field, str_list, truthy};
use super::records::{NewSimReferral, ReferralStatus, SimReferral, SimReferralDecision};
use super::state::{PrimeroSim, SimState};
use super::wire::{parse_data, SimError};

impl PrimeroSim {
    /// Refer a case as its owner would. Returns the referral.
    pub fn add_referral(
        &self,
        case_id: &str,
        referral: NewSimReferral,
    ) -> Result<SimReferral, SimError> {
        let mut st = self.lock();
        let owner = st
            .case(case_id)
            .ok_or(SimError::CaseNotFound)?
            .get("owned_by")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| st.config.user_name.clone());
        st.create_referral(case_id, referral, &owner)
    }

    /// Apply a decision through the state machine (same rules as `PATCH`).
    pub fn set_referral_decision(
        &self,
        case_id: &str,
        referral_id: &str,
        decision: SimReferralDecision,
    ) -> Result<SimReferral, SimError> {
        self.lock().decide_referral(case_id, referral_id, decision)
    }

    pub fn referrals(&self, case_id: &str) -> Vec<SimReferral> {
        self.lock()
            .referrals
            .get(case_id)
            .cloned()
            .unwrap_or_default()
    }
}

impl SimState {
    fn create_referral(
        &mut self,
        case_id: &str,
        req: NewSimReferral,
        transitioned_by: &str,
    ) -> Result<SimReferral, SimError> {
        if req.transitioned_to.trim().is_empty() {
            return Err(SimError::invalid(
                "transitioned_to",
                "Transitioned to user is required",
            ));
        }
        let now = self.clock.tick_string();
        let case = self.case_mut(case_id).ok_or(SimError::CaseNotFound)?;
        let consent = case.get("consent_for_services").is_some_and(truthy)
            && case.get("disclosure_other_orgs").is_some_and(truthy);
        let overridden = req.consent_overridden.unwrap_or(false);
        if !consent && !overridden {
            return Err(SimError::invalid(
                "consent",
                "Consent is required to refer this record",
            ));
        }
        let mut service_type = None;
        if let Some(sid) = &req.service_record_id {
            let service = case
                .get_mut("services_section")
                .and_then(Value::as_array_mut)
                .and_then(|services| {
                    services
                        .iter_mut()
                        .find(|s| s.get("unique_id").and_then(Value::as_str) == Some(sid.as_str()))
                })
                .and_then(Value::as_object_mut)
                .ok_or_else(|| SimError::invalid("service_record_id", "Service not found"))?;
            service_type = str_field(service, "service_type").map(str::to_string);
            service.insert("service_status_referred".into(), json!(true));
        }
        let mut assigned = str_list(case, "assigned_user_names");
        if !assigned.contains(&req.transitioned_to) {
            assigned.push(req.transitioned_to.clone());
        }
        case.insert("assigned_user_names".into(), json!(assigned));
        case.insert("last_updated_at".into(), json!(now));
        recompute_associated(case);
        let referral = SimReferral {
            id: new_uuid(),
            kind: "Referral".to_string(),
            status: ReferralStatus::InProgress,
            record_id: case_id.to_string(),
            record_type: "case".to_string(),
            transitioned_to: req.transitioned_to,
            transitioned_to_agency: req.transitioned_to_agency,
            transitioned_by: transitioned_by.to_string(),
            notes: req.notes.unwrap_or_default(),
            service: service_type,
            service_record_id: req.service_record_id,
            remote: req.remote.unwrap_or(false),
            consent_overridden: overridden,
            consent_individual_transfer: req.consent_individual_transfer.unwrap_or(false),
            created_at: now,
            responded_at: None,
            rejected_reason: None,
            record_access_denied: false,
            user_can_accept_or_reject: false,
        };
        self.referrals
            .entry(case_id.to_string())
            .or_default()
            .push(referral.clone());
        Ok(referral)
    }

    /// The referral state machine (spec §2.4). A transition it does not know
    /// leaves everything unchanged and still succeeds, as Primero does.
    fn decide_referral(
        &mut self,
        case_id: &str,
        referral_id: &str,
        decision: SimReferralDecision,
    ) -> Result<SimReferral, SimError> {
        if self.case(case_id).is_none() {
            return Err(SimError::CaseNotFound);
        }
        let current = self
            .referrals
            .get(case_id)
            .and_then(|rs| rs.iter().find(|r| r.id == referral_id))
            .cloned()
            .ok_or(SimError::ReferralNotFound)?;
        let target = decision.status.as_deref().and_then(ReferralStatus::parse);
        let mut updated = current.clone();
        match (current.status, target) {
            (ReferralStatus::InProgress, Some(ReferralStatus::Accepted)) => {
                let now = self.clock.tick_string();
                updated.status = ReferralStatus::Accepted;
                updated.responded_at = Some(now.clone());
                self.touch_case(case_id, &now, |_| {});
            }
            (ReferralStatus::InProgress, Some(ReferralStatus::Rejected)) => {
                let now = self.clock.tick_string();
                updated.status = ReferralStatus::Rejected;
                updated.responded_at = Some(now.clone());
                updated.rejected_reason = decision.rejected_reason;
                let recipient = current.transitioned_to.clone();
                self.touch_case(case_id, &now, |case| {
                    let assigned: Vec<String> = str_list(case, "assigned_user_names")
                        .into_iter()
                        .filter(|u| *u != recipient)
                        .collect();
                    case.insert("assigned_user_names".into(), json!(assigned));
                });
            }
            (ReferralStatus::Accepted, Some(ReferralStatus::Done)) => {
                let now = self.clock.tick_string();
                updated.status = ReferralStatus::Done;
                let service_id = current.service_record_id.clone();
                let note = decision.rejection_note;
                let stamp = now.clone();
                self.touch_case(case_id, &now, |case| {
                    let Some(sid) = service_id else { return };
                    let service = case
                        .get_mut("services_section")
                        .and_then(Value::as_array_mut)
                        .and_then(|services| {
                            services.iter_mut().find(|s| {
                                s.get("unique_id").and_then(Value::as_str) == Some(sid.as_str())
                            })
                        })
                        .and_then(Value::as_object_mut);
                    if let Some(service) = service {
                        service.insert("service_implemented".into(), json!("implemented"));
                        service.insert("service_implemented_day_time".into(), json!(stamp));
                        if let Some(note) = note {
                            service.insert("note_on_referral_from_provider".into(), json!(note));
                        }
                    }
                });
            }
            _ => return Ok(current),
        }
        if let Some(slot) = self
            .referrals
            .get_mut(case_id)
            .and_then(|rs| rs.iter_mut().find(|r| r.id == referral_id))
        {
            *slot = updated.clone();
        }
        Ok(updated)
    }
}

fn referral_view(mut r: SimReferral, user: &str) -> SimReferral {
    r.user_can_accept_or_reject =
        r.status == ReferralStatus::InProgress && r.transitioned_to == user;
    r
}

pub(super) async fn list_referrals(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    Path(id): Path<String>,
) -> Response {
    let st = sim.lock();
    let Some(case) = st.case(&id) else {
        return SimError::CaseNotFound.into_response(&format!("/api/v2/cases/{id}/referrals"));
    };
    // `Transitionable#referrals_for_user`: the owner sees every referral;
    // a role that may not view others' referrals sees only the open ones
    // made to itself.
    let sees_all =
        st.config.role.sees_others_referrals() || str_field(case, "owned_by") == Some(&user);
    let data: Vec<SimReferral> = st
        .referrals
        .get(&id)
        .into_iter()
        .flatten()
        .filter(|r| {
            sees_all
                || (r.transitioned_to == user
                    && matches!(
                        r.status,
                        ReferralStatus::InProgress | ReferralStatus::Accepted
                    ))
        })
        .map(|r| referral_view(r.clone(), &user))
        .collect();
    Json(json!({ "data": data })).into_response()
}

pub(super) async fn create_referral(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}/referrals");
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    let request: NewSimReferral = match serde_json::from_value(Value::Object(data)) {
        Ok(r) => r,
        Err(_) => {
            return SimError::invalid("transitioned_to", "Transitioned to user is required")
                .into_response(&resource)
        }
    };
    let mut st = sim.lock();
    let response = match st.create_referral(&id, request, &user) {
        Ok(r) => Json(json!({ "data": referral_view(r, &user) })).into_response(),
        Err(e) => return e.into_response(&resource),
    };
    drop(st);
    sim.after_write("POST", &resource);
    response
}

pub(super) async fn patch_referral(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    fault: Option<Extension<HandlerFault>>,
    Path((id, referral_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}/referrals/{referral_id}");
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    // Only status / rejected_reason / rejection_note are read; a key of the
    // wrong type is ignored rather than refused.
    let take = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
    let decision = SimReferralDecision {
        status: take("status"),
        rejected_reason: take("rejected_reason"),
        rejection_note: take("rejection_note"),
    };
    let mut st = sim.lock();
    if matches!(fault, Some(Extension(HandlerFault(Fault::NoopWrite)))) {
        let current = st
            .referrals
            .get(&id)
            .and_then(|rs| rs.iter().find(|r| r.id == referral_id))
            .cloned();
        return match current {
            Some(r) => Json(json!({ "data": referral_view(r, &user) })).into_response(),
            None => SimError::ReferralNotFound.into_response(&resource),
        };
    }
    let response = match st.decide_referral(&id, &referral_id, decision) {
        Ok(r) => Json(json!({ "data": referral_view(r, &user) })).into_response(),
        Err(e) => return e.into_response(&resource),
    };
    drop(st);
    sim.after_write("PATCH", &resource);
    response
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::people::PeopleGenerator;
    use crate::primero::tests::{obj, services};

    fn referred_case(sim: &PrimeroSim) -> (String, String, SimReferral) {
        let mut people = PeopleGenerator::new(3);
        let service =
            obj(json!({"service_type": "legal_support", "service_implementing_agency": "UNHCR"}));
        let id = sim.seed_person(&people.person(), vec![service]);
        let uid = services(&sim.case(&id).unwrap())[0]["unique_id"]
            .as_str()
            .unwrap()
            .to_string();
        let referral = sim
            .add_referral(
                &id,
                NewSimReferral {
                    transitioned_to: "unhcr_cw".into(),
                    service_record_id: Some(uid.clone()),
                    ..NewSimReferral::default()
                },
            )
            .unwrap();
        (id, uid, referral)
    }

    #[test]
    fn referral_creation_marks_service_and_assigns_recipient() {
        let sim = PrimeroSim::default();
        let (id, _, referral) = referred_case(&sim);
        assert_eq!(referral.status, ReferralStatus::InProgress);
        assert_eq!(referral.service.as_deref(), Some("legal_support"));
        let case = sim.case(&id).unwrap();
        assert_eq!(services(&case)[0]["service_status_referred"], true);
        assert_eq!(case["assigned_user_names"], json!(["unhcr_cw"]));
        assert!(case["associated_user_names"]
            .as_array()
            .unwrap()
            .contains(&json!("unhcr_cw")));
    }

    #[test]
    fn referral_without_consent_is_refused() {
        let sim = PrimeroSim::default();
        let id = sim.insert_case(Map::new()).unwrap();
        let refused = sim.add_referral(
            &id,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                ..NewSimReferral::default()
            },
        );
        assert!(matches!(refused, Err(SimError::Invalid { .. })));
        let forced = sim.add_referral(
            &id,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                consent_overridden: Some(true),
                ..NewSimReferral::default()
            },
        );
        assert!(forced.is_ok());
    }

    #[test]
    fn state_machine_accept_then_done() {
        let sim = PrimeroSim::default();
        let (id, _, referral) = referred_case(&sim);
        let accepted = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision::status(ReferralStatus::Accepted),
            )
            .unwrap();
        assert_eq!(accepted.status, ReferralStatus::Accepted);
        assert!(accepted.responded_at.is_some());
        // A late rejection after acceptance is a silent no-op.
        let late = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision {
                    status: Some("rejected".into()),
                    rejected_reason: Some("late".into()),
                    rejection_note: None,
                },
            )
            .unwrap();
        assert_eq!(late, accepted);
        let done = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision {
                    status: Some("done".into()),
                    rejected_reason: None,
                    rejection_note: Some("delivered".into()),
                },
            )
            .unwrap();
        assert_eq!(done.status, ReferralStatus::Done);
        let service = &services(&sim.case(&id).unwrap())[0];
        assert_eq!(service["service_implemented"], "implemented");
        assert_eq!(service["note_on_referral_from_provider"], "delivered");
        assert_eq!(sim.referrals(&id)[0].status, ReferralStatus::Done);
    }

    #[test]
    fn state_machine_reject_and_noops() {
        let sim = PrimeroSim::default();
        let (id, _, referral) = referred_case(&sim);
        let before = sim.case(&id).unwrap();
        // in_progress → done, same status, unknown status: all no-ops.
        for status in ["done", "in_progress", "bogus"] {
            let r = sim
                .set_referral_decision(
                    &id,
                    &referral.id,
                    SimReferralDecision {
                        status: Some(status.into()),
                        ..SimReferralDecision::default()
                    },
                )
                .unwrap();
            assert_eq!(r, referral, "{status}");
        }
        assert_eq!(
            sim.case(&id).unwrap(),
            before,
            "no-op must not touch the case"
        );
        let rejected = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision {
                    status: Some("rejected".into()),
                    rejected_reason: Some("not_match".into()),
                    rejection_note: None,
                },
            )
            .unwrap();
        assert_eq!(rejected.status, ReferralStatus::Rejected);
        assert_eq!(rejected.rejected_reason.as_deref(), Some("not_match"));
        assert!(rejected.responded_at.is_some());
        let case = sim.case(&id).unwrap();
        assert_eq!(case["assigned_user_names"], json!([]));
        assert!(!case["associated_user_names"]
            .as_array()
            .unwrap()
            .contains(&json!("unhcr_cw")));
        // rejected → accepted is not a transition either.
        let again = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision::status(ReferralStatus::Accepted),
            )
            .unwrap();
        assert_eq!(again, rejected);
        assert_eq!(
            sim.set_referral_decision(&id, "nope", SimReferralDecision::default()),
            Err(SimError::ReferralNotFound)
        );
    }
}

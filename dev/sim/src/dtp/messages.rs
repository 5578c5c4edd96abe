//! Messages DTP pushes to the bridge's inbox, of the shapes of examples 01 and 11.

use serde_json::{json, Value};

use crate::ping::SimIntervention;

/// A `PrimeroOutgoingReferral` message (flow 1-1) of the shape of example 01,
/// one intervention per entry.
pub fn referral_message(interventions: &[SimIntervention]) -> Value {
    json!({
        "interventions": interventions.iter().map(referral_row).collect::<Vec<_>>(),
        "request_type": "PrimeroOutgoingReferral",
    })
}

fn lookup(id: &str, logical_name: &str, name: &str) -> Value {
    json!({
        "Id": id,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "Name": name,
        "RowVersion": null,
    })
}

/// One flattened FetchXML row as DTP sends it (example 01).
pub fn referral_row(i: &SimIntervention) -> Value {
    let p = &i.person;
    let mut row = json!({
        "progres_interventionnumber": i.intervention_number,
        "progres_lpinterventionid": i.lpinterventionid,
        "progres_businessunit": i.business_unit,
        "progres_businessowner": "0b7f1c2e-2222-4a4a-9c9c-000000000002",
        "progres_interventiontype2": "0b7f1c2e-3333-4a4a-9c9c-000000000003",
        "progres_interventionstartdate": format!("{}T00:00:00Z", i.start_date),
        "progres_interventiondescription": i.description,
        "progres_reasonforreferral": i.reason_for_referral,
        "interventiontype.progres_description": i.intervention_type,
        "childprotection.progres_priority": "125080001",
        "user.title": i.caseworker_title,
        "user.internalemailaddress": i.caseworker_email,
        "user.mobilephone": i.caseworker_phone,
        "individuals.progres_id": p.progres_id,
        "individuals.progres_registrationgroupid": lookup(&i.registration_group_guid, "progres_registrationgroup", &p.registration_group),
        "individuals.progres_givenname": p.given_name,
        "individuals.progres_middlename": p.middle_name,
        "individuals.progres_familyname": p.family_name,
        "individuals.progres_dateofbirth": format!("{}T00:00:00Z", p.date_of_birth),
        "individuals.progres_sex": p.sex_code.to_string(),
        "individuals.progres_primaryphonenumber": p.phone,
        "individuals.progres_commonyusedname": p.given_name,
        "individuals.progres_coalocationlevel1": lookup("0b7f1c2e-5555-4a4a-9c9c-000000000005", "progres_locationlevel", "Gambella"),
        "individuals.progres_coalocationlevel2": lookup("0b7f1c2e-6666-4a4a-9c9c-000000000006", "progres_locationlevel", "Camp A"),
    });
    let obj = row.as_object_mut().expect("built as an object");
    if let Some(language) = i.languages.first() {
        obj.insert(
            "languages.progres_languagecodeid".into(),
            lookup(
                "0b7f1c2e-7777-4a4a-9c9c-000000000007",
                "progres_languagecode",
                language,
            ),
        );
    }
    if let Some(need) = i.specific_needs.first() {
        obj.insert(
            "specificneeds.progres_spncategory2".into(),
            lookup(
                &need.category_id,
                "progres_specificneedcode",
                &need.category,
            ),
        );
    }
    if let Some(primero_id) = &i.primero_id {
        obj.insert("progres_primeroid".into(), Value::from(primero_id.as_str()));
    }
    row
}

/// A proGres decision on a Primero referral (flow 2-3), as DTP pushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDecision {
    /// `<case_id>#<last 12 chars of the service unique_id>`.
    pub org_referral_id: String,
    /// `125080000` accepted, `125080001` rejected.
    pub review_decision: String,
    /// `125080000..=125080002`, or `None`.
    pub rejection_reason: Option<String>,
    pub rejection_comment: Option<String>,
    /// e.g. `REF-IOP-DAD-000000777`.
    pub referral_number: String,
}

/// A `PrimeroIncomingReferralDecision` message of the shape of example 11
/// (with proGres' own spelling of its field names).
pub fn decision_message(decisions: &[SimDecision]) -> Value {
    let rows: Vec<Value> = decisions
        .iter()
        .enumerate()
        .map(|(n, d)| {
            json!({
                "progres_individualid": format!("0b7f1c2e-8888-4a4a-9c9c-{n:012}"),
                "progres_interoperabilityreferralid": format!("0b7f1c2e-9999-4a4a-9c9c-{n:012}"),
                "progres_interoperabilityreferralnumber": d.referral_number,
                "progres_interoperabilityreferralrouteto": "125080001",
                "progres_interventiontype": "7ad37dd0-0306-e611-80d9-00155d34051a",
                "progres_orgreferralid": d.org_referral_id,
                "progres_reviewby": "0b7f1c2e-aaaa-4a4a-9c9c-00000000000a",
                "progres_reviewdate": "2024-06-12T00:00:00Z",
                "progres_reviewdecision": d.review_decision,
                "progres_interoperabiltyreferralrejectionreason": d.rejection_reason,
                "progres_interoperabilityreferralrejectionomment": d.rejection_comment,
            })
        })
        .collect();
    json!({"interventions": rows, "request_type": "PrimeroIncomingReferralDecision"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::PeopleGenerator;

    const EXAMPLE_01: &str = include_str!(
        "../../../../tests/fixtures/examples/01_dtp_inbound_progres_referral_flowA-1-1.json"
    );
    const EXAMPLE_11: &str = include_str!(
        "../../../../tests/fixtures/examples/11_dtp_decision_to_primero_flowA-2-3.json"
    );

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn messages_have_the_example_shapes() {
        let person = PeopleGenerator::new(1).person();
        let i = SimIntervention::for_person(person, 1)
            .with_specific_needs(vec![crate::ping::SpecificNeed::unaccompanied_child()]);
        let msg = referral_message(&[i]);
        let ex: Value = serde_json::from_str(EXAMPLE_01).unwrap();
        assert_eq!(keys(&msg), keys(&ex));
        assert_eq!(
            keys(&msg["interventions"][0]),
            keys(&ex["interventions"][0])
        );
        let d = decision_message(&[SimDecision {
            org_referral_id: "c#abcdef123456".into(),
            review_decision: "125080001".into(),
            rejection_reason: Some("125080001".into()),
            rejection_comment: Some("x".into()),
            referral_number: "REF-IOP-DAD-000000777".into(),
        }]);
        let ex: Value = serde_json::from_str(EXAMPLE_11).unwrap();
        assert_eq!(keys(&d), keys(&ex));
        assert_eq!(keys(&d["interventions"][0]), keys(&ex["interventions"][0]));
    }
}

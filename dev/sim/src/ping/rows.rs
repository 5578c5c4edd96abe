//! The rows PING serves for each retrieve shipping process (examples 14, 15, 20).

use serde_json::{json, Value};

use super::model::{PendingRowShape, SpecificNeed};
use super::state::SimState;
use super::wire::Row;

pub(super) fn into_row(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        _ => Row::new(),
    }
}

fn sex_name(code: u32) -> &'static str {
    match code {
        125_080_000 => "Female",
        125_080_001 => "Male",
        125_080_002 => "Other",
        _ => "Unknown",
    }
}

/// SHP-2747: the keys of example 14, in its order (or of the 2023 sample,
/// see [`PendingRowShape`]).
pub(super) fn pending_delivery_rows(st: &SimState) -> Vec<Row> {
    let shape = st.pending_row_shape;
    st.interventions
        .iter()
        .filter_map(|i| {
            let delivery = i.delivery.as_ref()?;
            let s = &i.spec;
            let p = &s.person;
            let mut row = into_row(json!({
                "progres_statusdate": delivery.status_date,
                "progres_individual.indiv.progres_sex": p.sex_code,
                "progres_individual.progres_sexname": sex_name(p.sex_code),
                "progres_individual.indiv.progres_givenname": p.given_name,
                "progres_individual.indiv.progres_registrationgroupid": s.registration_group_guid,
                "progres_individual.progres_registrationgroupidname": p.registration_group,
                "progres_lpintervention.int.progres_interventionnumber": s.intervention_number,
                "statuscode": 1,
                "progres_lpintervention.int.progres_interventionstartdate": s.start_date,
                "progres_dtpdeliveryid": delivery.delivery_id,
                "progres_deliverytype": 125_080_004,
                "progres_deliverytypename": "Primero Outgoing Referral",
                "progres_businessunit": s.business_unit,
                "progres_businessunitname": s.business_unit_name,
                "progres_individual.indiv.progres_id": p.progres_id,
                "progres_intervention": s.lpinterventionid,
                "progres_interventionname": s.intervention_number,
                "progres_lpinterventionid": s.lpinterventionid,
                "progres_lpintervention.int.progres_individual": s.individual_guid,
            }));
            if shape == PendingRowShape::Sample2023 {
                row.shift_remove("progres_lpinterventionid");
                row.insert(
                    "progres_lpintervention.progres_individualname".into(),
                    json!(p.progres_id),
                );
            }
            Some(row)
        })
        .collect()
}

/// SHP-2358: the keys of example 15, one row per language × specific need.
pub(super) fn intervention_detail_rows(st: &SimState, id: &str) -> Vec<Row> {
    let Some(i) = st.intervention(id) else {
        return Vec::new();
    };
    let s = &i.spec;
    let p = &s.person;
    let mut base = into_row(json!({
        "progres_interventionnumber": s.intervention_number,
        "progres_businessunit": s.business_unit,
        "progres_interventionstartdate": format!("{}T00:00:00Z", s.start_date),
        "progres_primerotransferstatusdate": i.transfer_status_date,
        "progres_interventiondescription": s.description,
        "progres_reasonforreferral": s.reason_for_referral,
        "progres_interventiontype2.interventiontype.progres_description": s.intervention_type,
        "progres_individual.individuals.progres_id": p.progres_id,
        "progres_individual.individuals.progres_registrationgroupid": s.registration_group_guid,
        "progres_individual.progres_registrationgroupidname": p.registration_group,
        "progres_individual.individuals.progres_givenname": p.given_name,
        "progres_individual.individuals.progres_familyname": p.family_name,
        "progres_individual.individuals.progres_dateofbirth": format!("{}T00:00:00Z", p.date_of_birth),
        "progres_individual.individuals.progres_sex": p.sex_code,
        "progres_individual.individuals.progres_primaryphonenumber": p.phone,
        "systemuser.title": s.caseworker_title,
        "systemuser.su.mobilephone": s.caseworker_phone,
        "systemuser.su.internalemailaddress": s.caseworker_email,
    }));
    if let Some(primero_id) = &s.primero_id {
        base.insert("progres_primeroid".into(), json!(primero_id));
    }
    // An empty side of the join still yields the base row, like an outer join.
    let languages: Vec<Option<&String>> = if s.languages.is_empty() {
        vec![None]
    } else {
        s.languages.iter().map(Some).collect()
    };
    let needs: Vec<Option<&SpecificNeed>> = if s.specific_needs.is_empty() {
        vec![None]
    } else {
        s.specific_needs.iter().map(Some).collect()
    };
    let mut rows = Vec::with_capacity(languages.len() * needs.len());
    for language in &languages {
        for need in &needs {
            let mut row = base.clone();
            if let Some(language) = language {
                row.insert(
                    "progres_language.progres_languagecodeidname".into(),
                    json!(language),
                );
            }
            if let Some(need) = need {
                row.insert(
                    "progres_specificneed.progres_spncategory2name".into(),
                    json!(need.category),
                );
                row.insert(
                    "progres_specificneed.progres_spnsubcategory2name".into(),
                    json!(need.subcategory),
                );
                row.insert(
                    "progres_specificneed.specificneeds.progres_spncategory2".into(),
                    json!(need.category_id),
                );
                row.insert(
                    "progres_specificneed.specificneeds.progres_spnsubcategory2".into(),
                    json!(need.subcategory_id),
                );
            }
            rows.push(row);
        }
    }
    rows
}

/// SHP-2795: every interoperability referral with its status (example 20).
pub(super) fn interop_list_rows(st: &SimState) -> Vec<Row> {
    st.interop_referrals
        .iter()
        .map(|r| {
            into_row(json!({
                "progres_interoperabilityreferralid": r.id,
                "progres_interoperabilityreferralstatus": r.status,
            }))
        })
        .collect()
}

/// SHP-2796: decision details (example 20, proGres spellings kept).
pub(super) fn interop_detail_row(st: &SimState, id: &str) -> Option<Row> {
    let r = st.interop_referrals.iter().find(|r| r.id == id)?;
    let mut row = into_row(json!({
        "progres_interoperabilityreferralid": r.id,
        "progres_interoperabilityreferralnumber": r.number,
        "progres_interoperabilityreferralstatus": r.status,
    }));
    let optional = [
        ("progres_offlineid", &r.offline_id),
        ("progres_orgreferralid", &r.org_referral_id),
        (
            "progres_interoperabiltyreferralrejectionreasonname",
            &r.rejection_reason_name,
        ),
        (
            "progres_interoperabilityreferralrejectionomment",
            &r.rejection_comment,
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            row.insert(key.into(), json!(value));
        }
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::PeopleGenerator;
    use crate::ping::{PingSim, PingSimConfig, SimIntervention};

    #[test]
    fn sample_2023_pending_rows_have_the_sample_s_keys() {
        let text = include_str!(
            "../../../../tests/fixtures/samples/ping-1-1_SHP-2747_rows-without-lpinterventionid.json"
        );
        let sample: Value = serde_json::from_str(text).unwrap();
        // The sample's first row has no middle name, as the seeded one.
        let want: Vec<&String> = sample["Data"][0].as_object().unwrap().keys().collect();
        let sim = PingSim::new(PingSimConfig::default());
        let mut people = PeopleGenerator::new(7);
        sim.add_intervention(SimIntervention::for_person(people.person(), 1));
        sim.set_pending_row_shape(PendingRowShape::Sample2023);
        let rows = pending_delivery_rows(&sim.lock());
        let got: Vec<&String> = rows[0].keys().collect();
        assert_eq!(got, want);
        sim.set_pending_row_shape(PendingRowShape::Current);
        let rows = pending_delivery_rows(&sim.lock());
        assert!(rows[0].contains_key("progres_lpinterventionid"));
    }

    #[test]
    fn join_rows_per_language_and_need() {
        let sim = PingSim::new(PingSimConfig::default());
        let mut people = PeopleGenerator::new(1);
        let one = sim.add_intervention(SimIntervention::for_person(people.person(), 1));
        let none = sim.add_intervention(
            SimIntervention::for_person(people.person(), 2).with_languages(Vec::<String>::new()),
        );
        let many = sim.add_intervention(
            SimIntervention::for_person(people.person(), 3)
                .with_languages(["Nuer", "Swahili"])
                .with_specific_needs(vec![
                    SpecificNeed::unaccompanied_child(),
                    SpecificNeed::child_labour(),
                ]),
        );
        let st = sim.lock();
        let rows = intervention_detail_rows(&st, &one);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0]["progres_language.progres_languagecodeidname"],
            "Nuer"
        );
        assert!(!rows[0].contains_key("progres_specificneed.progres_spncategory2name"));
        let rows = intervention_detail_rows(&st, &none);
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].contains_key("progres_language.progres_languagecodeidname"));
        assert_eq!(intervention_detail_rows(&st, &many).len(), 4);
        assert!(intervention_detail_rows(&st, "unknown").is_empty());
        assert_eq!(pending_delivery_rows(&st).len(), 3);
    }
}

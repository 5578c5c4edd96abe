//! Varied record bundles for the job benchmarks: the shapes of the jobs'
//! example fixtures (spec examples 15 and 18), filled with invented people
//! from [`bridge_sim::people`] and a rotation of mapped codes, so no two
//! records are identical.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use bridge_flows::ping_1_1::DELIVERY_COLUMNS;
use bridge_sim::people::PeopleGenerator;

/// proGres referral (SHP-2358 bundle) → Primero case.
pub const INBOUND_JOB: &str = "ping-1.1";
/// Primero case referred to UNHCR → SHP-2731 record.
pub const OUTBOUND_JOB: &str = "ping-2.1";
/// The date the fixtures are written for.
pub const TODAY: &str = "2025-06-01";

const INTERVENTION_TYPES: &[&str] = &[
    "Alternative Care",
    "BIA",
    "BID",
    "Family Tracing and Reunification",
];
const LANGUAGES: &[&str] = &["Nuer", "Swahili", "Anyuak", "Amharic", "Bari"];
const SERVICES: &[&str] = &["legal_support", "medical", "shelter", "cash_assistance"];

fn template(jobs_src: &Path, job: &str, fixture: &str) -> anyhow::Result<Value> {
    let path = jobs_src
        .join(job)
        .join("fixtures")
        .join(format!("{fixture}.record.json"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the fixture {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), value);
    }
}

/// `n` SHP-2358 bundles shaped like `example-15`, as WF 1.1 builds them.
pub fn inbound(jobs_src: &Path, n: usize, seed: u64) -> anyhow::Result<Vec<Value>> {
    let base = template(jobs_src, INBOUND_JOB, "example-15")?;
    let mut people = PeopleGenerator::new(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = people.person();
        let mut r = base.clone();
        let lp = format!(
            "0b7f1c2e-1111-4a4a-9c9c-{:012}",
            seed * 1_000_000 + i as u64
        );
        let number = format!("803-24-PRTITV-{}", 2_000_000 + i);
        let langs: Vec<&str> = (0..1 + i % 2)
            .map(|k| LANGUAGES[(i + k) % LANGUAGES.len()])
            .collect();
        let delivery = &mut r["delivery"];
        set(delivery, "progres_lpinterventionid", json!(lp));
        set(delivery, "progres_intervention", json!(lp));
        set(delivery, "progres_interventionname", json!(number));
        set(
            delivery,
            "progres_lpintervention.int.progres_interventionnumber",
            json!(number),
        );
        set(
            delivery,
            "progres_individual.indiv.progres_givenname",
            json!(p.given_name),
        );
        set(
            delivery,
            "progres_individual.indiv.progres_id",
            json!(p.progres_id),
        );
        set(
            delivery,
            "progres_individual.indiv.progres_sex",
            json!(p.sex_code),
        );
        let iv = &mut r["intervention"];
        set(iv, "progres_interventionnumber", json!(number));
        set(
            iv,
            "progres_interventiontype2.interventiontype.progres_description",
            json!(INTERVENTION_TYPES[i % INTERVENTION_TYPES.len()]),
        );
        set(
            iv,
            "progres_individual.individuals.progres_id",
            json!(p.progres_id),
        );
        set(
            iv,
            "progres_individual.progres_registrationgroupidname",
            json!(p.registration_group),
        );
        set(
            iv,
            "progres_individual.individuals.progres_givenname",
            json!(p.given_name),
        );
        set(
            iv,
            "progres_individual.individuals.progres_middlename",
            json!(p.middle_name),
        );
        set(
            iv,
            "progres_individual.individuals.progres_familyname",
            json!(p.family_name),
        );
        set(
            iv,
            "progres_individual.individuals.progres_dateofbirth",
            json!(format!("{}T00:00:00Z", p.date_of_birth)),
        );
        set(
            iv,
            "progres_individual.individuals.progres_sex",
            json!(p.sex_code),
        );
        set(
            iv,
            "progres_individual.individuals.progres_primaryphonenumber",
            json!(p.phone),
        );
        set(
            iv,
            "progres_language.progres_languagecodeidname",
            json!(langs[0]),
        );
        set(&mut r, "languages", json!(langs));
        // What the flow hands the job: the delivery row keeps only the
        // columns WF 1.1 reads from the pending list.
        if let Some(d) = r["delivery"].as_object_mut() {
            d.retain(|k, _| DELIVERY_COLUMNS.contains(&k.as_str()));
        }
        out.push(r);
    }
    Ok(out)
}

/// `n` Primero case bundles shaped like `example-18`, each with one service
/// referred to UNHCR.
pub fn outbound(jobs_src: &Path, n: usize, seed: u64) -> anyhow::Result<Vec<Value>> {
    let base = template(jobs_src, OUTBOUND_JOB, "example-18")?;
    let mut people = PeopleGenerator::new(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = people.person();
        let mut r = base.clone();
        let k = seed * 1_000_000 + i as u64;
        let id = format!("1d2e3f40-dddd-4eee-8fff-{k:012}");
        let case_id = format!("7c6b5a49-eeee-4fff-8aaa-{k:012}");
        let service_id = format!("5f4e3d2c-ffff-4aaa-8bbb-{k:012}");
        let referral_id = format!("2b3c4d5e-1111-4222-8333-{k:012}");
        let service = SERVICES[i % SERVICES.len()];
        let kase = &mut r["case"];
        set(kase, "id", json!(id));
        set(kase, "case_id", json!(case_id));
        set(
            kase,
            "case_id_display",
            json!(&case_id[case_id.len() - 7..]),
        );
        set(kase, "name_first", json!(p.given_name));
        set(kase, "name_middle", json!(p.middle_name));
        set(kase, "name_last", json!(p.family_name));
        set(kase, "date_of_birth", json!(p.date_of_birth));
        let sex = if p.sex_code == 125_080_001 {
            "male"
        } else {
            "female"
        };
        set(kase, "sex", json!(sex));
        set(kase, "unhcr_individual_no", json!(p.progres_id));
        set(kase, "unhcr_id_no", json!(p.registration_group));
        set(kase, "telephone_current", json!(p.phone));
        if let Some(s) = kase["services_section"].get_mut(0) {
            set(s, "unique_id", json!(service_id));
            set(s, "service_type", json!(service));
        }
        set(&mut r, "service_id", json!(service_id));
        if let Some(rf) = r["referrals"].get_mut(0) {
            set(rf, "id", json!(referral_id));
            set(rf, "record_id", json!(id));
            set(rf, "service", json!(service));
            set(rf, "service_record_id", json!(service_id));
        }
        out.push(r);
    }
    Ok(out)
}

/// Records for `job` (one of the two real mappings).
pub fn for_job(jobs_src: &Path, job: &str, n: usize, seed: u64) -> anyhow::Result<Vec<Value>> {
    match job {
        INBOUND_JOB => inbound(jobs_src, n, seed),
        OUTBOUND_JOB => outbound(jobs_src, n, seed),
        other => anyhow::bail!("no benchmark records for job `{other}`"),
    }
}

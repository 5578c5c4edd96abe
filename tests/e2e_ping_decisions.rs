//! End to end: referral decisions in both directions.
//!
//! PING workflows 1.2 (Primero decision → proGres) and 2.2 (proGres decision
//! → Primero) through the real `bridge` binary against the Primero and PING
//! simulators on loopback; DTP flow 1-2 through the binary against the DTP
//! simulator (mutual TLS); DTP flow 2-3 through its inbox handler. The
//! simulators run inside the test so it can look at what each side holds.
//! The state database (`state.db` next to the config) persists between
//! invocations, as in production.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bridge_demo::scenario::Simulators;
use bridge_flows::app::App;
use bridge_flows::dtp_2_3::Handler as DecisionHandler;
use bridge_flows::RecordOutcome;
use bridge_inbox::{InboxHandler, InboxKind, MessageClaim};
use bridge_partners::primero::{PrimeroAuth, PrimeroConfig};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{JobRuntime, RuntimeConfig};
use bridge_sim::dtp::DtpEndpoint;
use bridge_sim::dtp::{decision_message, DtpSim, DtpSimConfig, SimDecision, TestPki};
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::ping::SimIntervention;
use bridge_sim::primero::{
    NewSimReferral, PrimeroSim, ReferralStatus, SimReferralDecision, SimRole,
};
use bridge_store::{OpenMode, SqliteStore, Store};
use bridge_testkit::cli::output_off_runtime;
use bridge_testkit::personal::assert_absent;
use serde_json::{json, Map, Value};

const JOB_12: &str = "ping-1.2";
const JOB_22: &str = "ping-2.2";
const JOB_DTP_12: &str = "dtp-1.2";
const JOB_DTP_23: &str = "dtp-2.3";
const TODAY: &str = "2025-06-01";
const DTP_KEY_ENV: &str = "BRIDGE_DTP_SUBSCRIPTION_KEY";

/// Free text a caseworker or proGres user writes: must never reach a log.
const REASON: &str = "No foster family capacity this month";
const COMMENT: &str = "ID number belongs to a different individual";

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

struct Harness {
    sims: Simulators,
    config: PathBuf,
    state: PathBuf,
    tmp: tempfile::TempDir,
}

/// Simulators plus a config whose jobs folder holds only `jobs` (the other
/// design's jobs need tables the Kenya folder does not have).
async fn harness(jobs: &[&str], country: &str) -> Harness {
    let project = ProjectDirs::locate().expect("project folder");
    let names: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
    project.build_jobs(&names).expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    for job in jobs {
        std::fs::copy(project.job_wasm(job), dir.join(format!("{job}.wasm"))).unwrap();
    }
    let config = tmp.path().join("bridge.toml");
    std::fs::write(&config, sims.config_toml(&dir, &project.mappings(country))).unwrap();
    Harness {
        sims,
        config,
        state: tmp.path().join("state.db"),
        tmp,
    }
}

struct Run {
    report: Value,
    output: String,
    code: Option<i32>,
}

/// Run the binary off the async runtime's threads (the simulators live on them).
async fn run_flow(config: &Path, flow: &str, env: Vec<(&'static str, String)>) -> Run {
    let args = vec![
        "flow".to_string(),
        "run".into(),
        "--init".into(),
        flow.into(),
        "--config".into(),
        config.display().to_string(),
        "--today".into(),
        TODAY.into(),
        "--json".into(),
    ];
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(&args)
        .envs(env)
        .env("BRIDGE_LOG", "debug")
        .current_dir(std::env::temp_dir());
    let out = output_off_runtime(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\n{stderr}"));
    assert!(report["aborted"].is_null(), "{report:#}\n{stderr}");
    Run {
        report,
        output: format!("{stdout}\n{stderr}"),
        code: out.status.code(),
    }
}

impl Run {
    fn record(&self, source_id: &str) -> &Value {
        self.records()
            .iter()
            .find(|r| r["source_id"] == source_id)
            .unwrap_or_else(|| panic!("no record {source_id} in {:#}", self.report))
    }

    fn records(&self) -> &Vec<Value> {
        self.report["records"].as_array().unwrap()
    }

    fn outcome(&self, source_id: &str) -> &str {
        self.record(source_id)["outcome"]["outcome"]
            .as_str()
            .unwrap()
    }

    fn count(&self, outcome: &str) -> usize {
        self.records()
            .iter()
            .filter(|r| r["outcome"]["outcome"] == outcome)
            .count()
    }

    fn assert_no_personal_data(&self, people: &[Person], free_text: &[&str]) {
        for p in people {
            assert_absent("bridge output", &self.output, p.personal_data());
        }
        for text in free_text {
            assert!(
                !self.output.contains(text),
                "free text `{text}` in bridge output"
            );
        }
    }
}

/// A Primero case from proGres (workflow 1.1) and its intervention in proGres.
struct Referred {
    /// Case record id.
    id: String,
    /// Primero `case_id`.
    case_id: String,
    service_id: String,
    lpinterventionid: String,
}

impl Referred {
    fn source(&self) -> String {
        format!("{}/{}", self.id, self.service_id)
    }
}

fn new_service(number: &str) -> Map<String, Value> {
    obj(json!({
        "service_type": "alternative_care",
        "service_request_agency": "UNHCR",
        "service_referral": "external_referral",
        "service_implementing_agency": "UNICEF",
        "unhcr_referral_status": "pending",
        "progres_interventionnumber": number,
    }))
}

fn first_service_id(primero: &PrimeroSim, id: &str) -> String {
    primero.case(id).unwrap()["services_section"][0]["unique_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Seed an intervention in proGres and its case in Primero, as 1.1 leaves them.
fn referred(sims: &Simulators, person: Person, n: u64) -> Referred {
    let iv = SimIntervention::for_person(person.clone(), n);
    let composite = format!(
        "{},{},{}",
        iv.intervention_number, iv.lpinterventionid, iv.business_unit
    );
    let lpinterventionid = sims.ping_sim().add_intervention(iv);
    let primero = sims.primero_sim();
    let id = primero.seed_person(&person, vec![new_service(&composite)]);
    let case_id = primero.case(&id).unwrap()["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    Referred {
        service_id: first_service_id(primero, &id),
        id,
        case_id,
        lpinterventionid,
    }
}

/// The caseworker records a decision on the service.
fn decide(primero: &PrimeroSim, case: &str, service: &str, status: &str, reason: Option<&str>) {
    let mut svc = obj(json!({"unique_id": service, "unhcr_referral_status": status}));
    if let Some(r) = reason {
        svc.insert("unhcr_referral_rejection_reason".into(), json!(r));
    }
    primero
        .update_case(case, obj(json!({"services_section": [svc]})))
        .unwrap();
}

fn last_updated_at(primero: &PrimeroSim, id: &str) -> String {
    primero.case(id).unwrap()["last_updated_at"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn cursor(state: &Path, flow: &str) -> Option<String> {
    SqliteStore::open(state, OpenMode::Existing)
        .await
        .unwrap()
        .cursor(flow)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// PING workflow 1.2
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_1_2_sends_each_decision_once_and_a_changed_one_again() {
    let h = harness(&[JOB_12], "kenya-dadaab").await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(120);
    let people: Vec<Person> = (0..5).map(|_| gen.person()).collect();

    let rejected = referred(&h.sims, people[0].clone(), 1201);
    let unknown = referred(&h.sims, people[1].clone(), 1202);
    let accepted = referred(&h.sims, people[2].clone(), 1203);
    let pending = referred(&h.sims, people[3].clone(), 1204);
    // Created before 1.1 wrote composite numbers.
    let legacy_id = primero.seed_person(&people[4], vec![new_service("803-24-PRTITV-0999999")]);
    let legacy_service = first_service_id(primero, &legacy_id);

    decide(
        primero,
        &rejected.id,
        &rejected.service_id,
        "rejected",
        Some(REASON),
    );
    decide(primero, &unknown.id, &unknown.service_id, "on_hold", None);
    decide(
        primero,
        &accepted.id,
        &accepted.service_id,
        "accepted",
        None,
    );
    decide(primero, &legacy_id, &legacy_service, "accepted", None);

    let env = h.sims.secret_env();
    let run1 = run_flow(&h.config, "ping-1.2", env.clone()).await;
    assert_eq!(run1.code, Some(2), "{:#}", run1.report);
    assert_eq!(run1.report["fetched"], 5);
    assert_eq!(run1.outcome(&rejected.source()), "sent");
    assert_eq!(run1.outcome(&accepted.source()), "sent");
    assert_eq!(
        run1.record(&rejected.source())["outcome"]["target_id"],
        rejected.lpinterventionid.as_str()
    );
    // Pending is not a decision: not sent, not reported.
    assert!(run1
        .records()
        .iter()
        .all(|r| r["source_id"] != pending.source().as_str()));
    assert_eq!(
        ping.intervention_state(&pending.lpinterventionid)
            .unwrap()
            .status_writes,
        0
    );

    // An unknown status is a failure, never an acceptance (nor the "unknown" code).
    let failed = run1.record(&unknown.source());
    assert_eq!(failed["outcome"]["code"], "unmapped", "{failed:#}");
    assert!(failed["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("outbound-decision-status"));
    assert_eq!(
        ping.intervention_state(&unknown.lpinterventionid)
            .unwrap()
            .status_writes,
        0
    );
    // A legacy intervention number is reported, not silently dropped.
    let legacy = run1.record(&format!("{legacy_id}/{legacy_service}"));
    assert_eq!(legacy["outcome"]["code"], "bad-input", "{legacy:#}");
    let why = legacy["outcome"]["reason"].as_str().unwrap();
    assert!(
        why.contains("progres_interventionnumber") && why.contains("legacy"),
        "{why}"
    );

    // proGres holds the decisions; the rejection exactly as example 17.
    let state = ping.intervention_state(&rejected.lpinterventionid).unwrap();
    assert_eq!(state.transfer_status.as_deref(), Some("125080004"));
    assert_eq!(state.primero_id.as_deref(), Some(rejected.case_id.as_str()));
    assert_eq!(state.status_writes, 1);
    assert_eq!(
        ping.transfer_status(&accepted.lpinterventionid).as_deref(),
        Some("125080003")
    );
    let owner = primero.case(&rejected.id).unwrap()["owned_by"].clone();
    let expected = json!({
        "ShippingProcessId": "SHP-2748",
        "InteropId": "INT-1436",
        "Data": [{
            "ExternalId": rejected.case_id,
            "Attachments": [{"Comment": format!("Referral rejected by PRIMERO: {REASON}")}],
            "Fields": [
                {"Name": "progres_lpinterventionid", "Value": rejected.lpinterventionid},
                {"Name": "progres_businessunit", "Value": "577ccdf6-86de-e811-80d8-001dd8b71fe3"},
                {"Name": "progres_primerotransferstatus", "Value": "125080004"},
                {"Name": "progres_primerotransferstatusdate", "Value": TODAY},
                {"Name": "progres_primeroid", "Value": rejected.case_id},
                {"Name": "progres_primerocaseworker", "Value": owner},
            ]
        }]
    });
    let bodies = ping.ingestion_bodies();
    let (sent, record) =
        ingested(&bodies, rejected.case_id.as_str()).expect("SHP-2748 record of the rejection");
    assert_eq!(sent.path, "/api/ingestion/v2/PNR-1363/data");
    assert_eq!(
        sent.body["ShippingProcessId"],
        expected["ShippingProcessId"]
    );
    assert_eq!(sent.body["InteropId"], expected["InteropId"]);
    assert_eq!(
        serde_json::to_string(record).unwrap(),
        serde_json::to_string(&expected["Data"][0]).unwrap()
    );
    let (accepted_body, accepted_record) = ingested(&bodies, accepted.case_id.as_str()).unwrap();
    assert_eq!(
        accepted_record["Attachments"],
        json!([{"Comment": "Referral acknowledged by PRIMERO"}])
    );
    // The page's decisions went in one ingestion, as the original sent a
    // run's (issue 18): each still got its own answer.
    assert!(std::ptr::eq(sent, accepted_body), "{bodies:#?}");

    // The cursor is a case's last_updated_at, not "now": held on the case
    // whose status the mapping does not know, so it is read again.
    assert_eq!(
        cursor(&h.state, "ping-1.2").await,
        Some(last_updated_at(primero, &unknown.id))
    );

    // Second run, nothing changed: nothing is sent again.
    let writes = ping.ingestion_records().len();
    let run2 = run_flow(&h.config, "ping-1.2", env.clone()).await;
    assert_eq!(ping.ingestion_records().len(), writes, "{:#}", run2.report);
    assert_eq!(run2.count("sent"), 0);
    assert_eq!(run2.outcome(&accepted.source()), "already-sent");
    assert_eq!(
        run2.record(&unknown.source())["outcome"]["code"],
        "unmapped"
    );

    // The caseworker changes one decision, settles the unknown one, and
    // touches a case without changing its decision.
    decide(
        primero,
        &rejected.id,
        &rejected.service_id,
        "accepted",
        None,
    );
    decide(
        primero,
        &unknown.id,
        &unknown.service_id,
        "rejected",
        Some(REASON),
    );
    primero
        .update_case(&accepted.id, obj(json!({"risk_level": "high"})))
        .unwrap();
    let run3 = run_flow(&h.config, "ping-1.2", env.clone()).await;
    assert_eq!(run3.outcome(&rejected.source()), "sent");
    assert_eq!(run3.outcome(&unknown.source()), "sent");
    assert_eq!(run3.outcome(&accepted.source()), "already-sent");
    let state = ping.intervention_state(&rejected.lpinterventionid).unwrap();
    assert_eq!(state.transfer_status.as_deref(), Some("125080003"));
    assert_eq!(state.status_writes, 2);
    assert_eq!(
        ping.intervention_state(&accepted.lpinterventionid)
            .unwrap()
            .status_writes,
        1
    );
    assert_eq!(
        ping.transfer_status(&unknown.lpinterventionid).as_deref(),
        Some("125080004")
    );
    // Everything up to the newest change is done (the legacy service is
    // reported, and fixing it would touch its case): the cursor moves on.
    let newest = [
        &rejected.id,
        &unknown.id,
        &accepted.id,
        &pending.id,
        &legacy_id,
    ]
    .iter()
    .map(|id| last_updated_at(primero, id))
    .max();
    assert_eq!(cursor(&h.state, "ping-1.2").await, newest);

    for run in [&run1, &run2, &run3] {
        run.assert_no_personal_data(&people, &[REASON]);
    }
}

/// A decision on a case without an owner leaves `progres_primerocaseworker`
/// out: `"Value": null` would blank the caseworker proGres already holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_1_2_leaves_out_a_field_without_a_value() {
    let h = harness(&[JOB_12], "kenya-dadaab").await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(126);
    let r = referred(&h.sims, gen.person(), 1261);
    decide(primero, &r.id, &r.service_id, "accepted", None);
    let env = h.sims.secret_env();
    let run1 = run_flow(&h.config, "ping-1.2", env.clone()).await;
    assert_eq!(run1.outcome(&r.source()), "sent", "{:#}", run1.report);
    let owner = primero.case(&r.id).unwrap()["owned_by"]
        .as_str()
        .unwrap()
        .to_string();
    let held = |ping: &bridge_sim::ping::PingSim| {
        ping.intervention_state(&r.lpinterventionid)
            .unwrap()
            .primero_caseworker
    };
    assert_eq!(held(ping).as_deref(), Some(owner.as_str()));

    // The case loses its owner, then the caseworker's decision changes.
    primero
        .update_case(&r.id, obj(json!({"owned_by": ""})))
        .unwrap();
    decide(primero, &r.id, &r.service_id, "rejected", Some(REASON));
    let run2 = run_flow(&h.config, "ping-1.2", env).await;
    assert_eq!(run2.outcome(&r.source()), "sent", "{:#}", run2.report);
    let state = ping.intervention_state(&r.lpinterventionid).unwrap();
    assert_eq!(state.status_writes, 2);
    assert_eq!(
        held(ping).as_deref(),
        Some(owner.as_str()),
        "proGres lost the caseworker"
    );
    let last = ping.ingestion_records().pop().unwrap();
    assert_eq!(last.field("progres_primerocaseworker"), None);
    assert_eq!(
        last.field("progres_primerotransferstatus"),
        Some(&json!("125080004"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_1_2_reads_every_page_of_more_than_1000_changed_cases() {
    let h = harness(&[JOB_12], "kenya-dadaab").await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(121);
    const CASES: u64 = 1003;
    let mut ids = Vec::new();
    for n in 0..CASES {
        let iv = SimIntervention::for_person(gen.person(), 20_000 + n);
        let composite = format!(
            "{},{},{}",
            iv.intervention_number, iv.lpinterventionid, iv.business_unit
        );
        ids.push(ping.add_intervention(iv));
        let mut service = new_service(&composite);
        service.insert("unhcr_referral_status".into(), json!("accepted"));
        // Only ids, consent and the service: no one's personal data is needed here.
        primero
            .insert_case(obj(json!({
                "consent_for_services": true,
                "disclosure_other_orgs": true,
                "services_section": [service]
            })))
            .unwrap();
    }
    let run = run_flow(&h.config, "ping-1.2", h.sims.secret_env()).await;
    assert_eq!(run.report["fetched"], CASES, "{:#}", run.report["fetched"]);
    assert_eq!(run.count("sent"), CASES as usize);
    assert_eq!(run.code, Some(0));
    for id in &ids {
        assert_eq!(
            ping.transfer_status(id).as_deref(),
            Some("125080003"),
            "{id}"
        );
    }
    // A second run reads only the cases of the cursor's second (Primero
    // stamps whole seconds, so that can be many), each already sent.
    let again = run_flow(&h.config, "ping-1.2", h.sims.secret_env()).await;
    assert_eq!(again.count("sent"), 0);
    let fetched = again.report["fetched"].as_u64().unwrap();
    assert!((1..=CASES).contains(&fetched), "{fetched}");
    assert_eq!(again.count("already-sent") as u64, fetched);
    assert_eq!(ping.ingestion_records().len(), CASES as usize);
}

// ---------------------------------------------------------------------------
// PING workflow 2.2
// ---------------------------------------------------------------------------

/// A case with a service referred to UNHCR (workflow 2.1 done): its record
/// id, `case_id`, and the referral id.
fn referred_to_unhcr(
    primero: &PrimeroSim,
    person: &Person,
    service_ids: &[String],
) -> (String, String, Vec<String>) {
    let services = service_ids
        .iter()
        .map(|uid| {
            obj(json!({
                "unique_id": uid,
                "service_type": "legal_support",
                "service_implementing_agency": "UNHCR",
            }))
        })
        .collect();
    let id = primero.seed_person(person, services);
    let referrals = service_ids
        .iter()
        .map(|uid| {
            primero
                .add_referral(
                    &id,
                    NewSimReferral {
                        transitioned_to: "unhcr_cw".into(),
                        transitioned_to_agency: Some("UNHCR".into()),
                        service_record_id: Some(uid.clone()),
                        ..NewSimReferral::default()
                    },
                )
                .unwrap()
                .id
        })
        .collect();
    let case_id = primero.case(&id).unwrap()["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    (id, case_id, referrals)
}

fn referral_status(
    primero: &PrimeroSim,
    case: &str,
    referral: &str,
) -> (ReferralStatus, Option<String>) {
    let r = primero
        .referrals(case)
        .into_iter()
        .find(|r| r.id == referral)
        .unwrap();
    (r.status, r.rejected_reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_2_2_applies_decisions_to_the_exact_referral_and_marks_them_synced() {
    let h = harness(&[JOB_22], "kenya-dadaab").await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let env = h.sims.secret_env();

    // Nothing in proGres ("No Data Available"): nothing to do.
    let empty = run_flow(&h.config, "ping-2.2", env.clone()).await;
    assert_eq!(empty.report["fetched"], 0);
    assert_eq!(empty.code, Some(0));

    let mut gen = PeopleGenerator::new(220);
    let people: Vec<Person> = (0..4).map(|_| gen.person()).collect();

    // X: the decided service, plus services whose ids are prefixes/suffixes
    // of it (or it of them), each with an open referral made first.
    let target = uuid::Uuid::new_v4().to_string();
    let lookalikes = vec![
        target[..target.len() - 1].to_string(),
        format!("{target}0"),
        format!("0{target}"),
        target[1..].to_string(),
    ];
    let mut x_services = lookalikes.clone();
    x_services.push(target.clone());
    let (x, x_case_id, x_referrals) = referred_to_unhcr(primero, &people[0], &x_services);
    let x_ref = x_referrals.last().unwrap().clone();
    let rejected = ping.add_interop_referral(&x_case_id, &target);
    ping.decide_interop_referral(
        &rejected,
        125_080_002,
        Some("Individual Not Match UNHCR ID"),
        Some(COMMENT),
    );

    // Y: accepted in Primero already; proGres rejects → Primero would silently ignore it.
    let y_service = uuid::Uuid::new_v4().to_string();
    let (y, y_case_id, y_refs) =
        referred_to_unhcr(primero, &people[1], std::slice::from_ref(&y_service));
    primero
        .set_referral_decision(
            &y,
            &y_refs[0],
            SimReferralDecision::status(ReferralStatus::Accepted),
        )
        .unwrap();
    let conflict = ping.add_interop_referral(&y_case_id, &y_service);
    ping.decide_interop_referral(&conflict, 125_080_002, None, None);

    // Z: accepted by proGres.
    let z_service = uuid::Uuid::new_v4().to_string();
    let (z, z_case_id, z_refs) =
        referred_to_unhcr(primero, &people[2], std::slice::from_ref(&z_service));
    let accepted = ping.add_interop_referral(&z_case_id, &z_service);
    ping.decide_interop_referral(&accepted, 125_080_001, None, None);

    // W: Primero already holds this rejection (an earlier run's "synced" was lost).
    let w_service = uuid::Uuid::new_v4().to_string();
    let (w, w_case_id, w_refs) =
        referred_to_unhcr(primero, &people[3], std::slice::from_ref(&w_service));
    primero
        .set_referral_decision(
            &w,
            &w_refs[0],
            SimReferralDecision::status(ReferralStatus::Rejected),
        )
        .unwrap();
    let applied = ping.add_interop_referral(&w_case_id, &w_service);
    ping.decide_interop_referral(&applied, 125_080_002, None, None);

    // A decision for a case Primero does not have.
    let orphan = ping.add_interop_referral(
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    ping.decide_interop_referral(&orphan, 125_080_001, None, None);
    // Not decided yet, and already synced: not picked up.
    let undecided = ping.add_interop_referral(&z_case_id, uuid::Uuid::new_v4().to_string());
    let synced_before = ping.add_interop_referral(&z_case_id, uuid::Uuid::new_v4().to_string());
    ping.decide_interop_referral(&synced_before, 125_080_003, None, None);

    let run1 = run_flow(&h.config, "ping-2.2", env.clone()).await;
    assert_eq!(run1.code, Some(2), "{:#}", run1.report);
    assert_eq!(run1.report["fetched"], 5);
    for id in [&undecided, &synced_before] {
        assert!(run1.records().iter().all(|r| r["source_id"] != id.as_str()));
    }

    // X: exactly the target referral, with the em-dash reason; the lookalikes stay open.
    assert_eq!(run1.outcome(&rejected), "updated");
    assert_eq!(run1.record(&rejected)["acknowledged"], true);
    assert_eq!(
        referral_status(primero, &x, &x_ref),
        (
            ReferralStatus::Rejected,
            Some(format!("Individual Not Match UNHCR ID — {COMMENT}"))
        )
    );
    for r in &x_referrals[..lookalikes.len()] {
        assert_eq!(
            referral_status(primero, &x, r).0,
            ReferralStatus::InProgress
        );
    }
    assert_eq!(
        ping.interop_referral(&rejected).unwrap().status,
        125_080_003
    );
    let expected = json!({
        "ShippingProcessId": "SHP-2284",
        "InteropId": "INT-1436",
        "Data": [{
            "ExternalId": rejected,
            "Attachments": [],
            "Fields": [
                {"Name": "progres_interoperabilityreferralid", "Value": rejected},
                {"Name": "progres_interoperabilityreferralstatus", "Value": "125080003"},
                {"Name": "progres_comments", "Value": "Referral decision synced with PRIMERO via OpenFn"},
            ]
        }]
    });
    let bodies = ping.ingestion_bodies();
    let (body, record) = ingested(&bodies, rejected.as_str()).expect("SHP-2284 record");
    assert_eq!(
        body.body["ShippingProcessId"],
        expected["ShippingProcessId"]
    );
    assert_eq!(body.body["InteropId"], expected["InteropId"]);
    assert_eq!(
        serde_json::to_string(record).unwrap(),
        serde_json::to_string(&expected["Data"][0]).unwrap()
    );

    // Y: Primero would ignore it; held, not reported to proGres as synced.
    let held = run1.record(&conflict);
    assert_eq!(held["outcome"]["outcome"], "held");
    assert_eq!(held["outcome"]["reason"], "decision-conflict");
    assert_eq!(held["acknowledged"], false);
    assert_eq!(
        referral_status(primero, &y, &y_refs[0]).0,
        ReferralStatus::Accepted
    );
    assert_eq!(
        ping.interop_referral(&conflict).unwrap().status,
        125_080_002
    );

    // Z accepted and synced; W recognised as applied and synced.
    assert_eq!(run1.outcome(&accepted), "updated");
    assert_eq!(
        referral_status(primero, &z, &z_refs[0]),
        (ReferralStatus::Accepted, None)
    );
    assert_eq!(
        ping.interop_referral(&accepted).unwrap().status,
        125_080_003
    );
    assert_eq!(run1.outcome(&applied), "already-present");
    assert_eq!(ping.interop_referral(&applied).unwrap().status, 125_080_003);

    // No case: failed, left unsynced for the next run.
    assert_eq!(run1.record(&orphan)["outcome"]["code"], "not-found");
    assert_eq!(ping.interop_referral(&orphan).unwrap().status, 125_080_001);

    // Second run: only what is not synced comes back; nothing is rewritten.
    let synced_writes = ping.ingestion_records().len();
    let x_after = primero.referrals(&x);
    let run2 = run_flow(&h.config, "ping-2.2", env.clone()).await;
    assert_eq!(run2.report["fetched"], 2, "{:#}", run2.report);
    assert_eq!(run2.outcome(&conflict), "held");
    assert_eq!(run2.outcome(&orphan), "failed");
    assert_eq!(ping.ingestion_records().len(), synced_writes);
    assert_eq!(primero.referrals(&x), x_after);

    for run in [&run1, &run2] {
        run.assert_no_personal_data(&people, &[COMMENT]);
    }
}

/// Primero v2.11+ drops a `case_id` filter the API user's role may not
/// read and answers its whole scope: a proGres decision must then be held
/// with the reason, not applied to whichever case came back, nor reported
/// to proGres as synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_2_2_holds_a_decision_when_the_role_cannot_filter_on_case_id() {
    let h = harness(&[JOB_22], "kenya-dadaab").await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(221);
    let service = uuid::Uuid::new_v4().to_string();
    let (case, case_id, refs) =
        referred_to_unhcr(primero, &gen.person(), std::slice::from_ref(&service));
    // Another child's referred case in the same scope.
    let other_service = uuid::Uuid::new_v4().to_string();
    referred_to_unhcr(primero, &gen.person(), std::slice::from_ref(&other_service));
    let decision = ping.add_interop_referral(&case_id, &service);
    ping.decide_interop_referral(&decision, 125_080_001, None, None);
    primero.set_role(SimRole::bridge().without_read("case_id"));

    let run = run_flow(&h.config, "ping-2.2", h.sims.secret_env()).await;
    let rec = run.record(&decision);
    assert_eq!(rec["outcome"]["outcome"], "held", "{rec:#}");
    assert!(
        rec["outcome"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("filter-not-applied"),
        "{rec:#}"
    );
    assert_eq!(rec["acknowledged"], false);
    assert_eq!(
        referral_status(primero, &case, &refs[0]).0,
        ReferralStatus::InProgress
    );
    assert_eq!(
        ping.interop_referral(&decision).unwrap().status,
        125_080_001
    );
}

// ---------------------------------------------------------------------------
// DTP flows 1-2 and 2-3
// ---------------------------------------------------------------------------

/// `text` without its `[ping]` section (the Gambella deployment has no PING).
fn without_ping(text: &str) -> String {
    let start = text.find("[ping]").expect("[ping] section");
    let end = start + text[start..].find("[jobs]").expect("[jobs] section");
    format!("{}{}", &text[..start], &text[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_1_2_posts_each_decision_once_and_a_changed_one_again() {
    let h = harness(&[JOB_DTP_12], "ethiopia-gambella").await;
    let pki = TestPki::generate();
    let files = pki.write_files(h.tmp.path()).unwrap();
    let dtp_config = DtpSimConfig::new(&pki);
    let key = dtp_config.subscription_key.clone();
    let dtp = DtpSim::start_loopback(dtp_config).await.unwrap();
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        format!(
            "{}\n{}",
            without_ping(&text),
            dtp.config_toml(&files, DTP_KEY_ENV)
        ),
    )
    .unwrap();
    let mut env = h.sims.secret_env();
    env.push((DTP_KEY_ENV, key));

    let primero = h.sims.primero_sim();
    let mut gen = PeopleGenerator::new(130);
    let people: Vec<Person> = (0..2).map(|_| gen.person()).collect();
    // Design A services hold the plain intervention number.
    let a = primero.seed_person(&people[0], vec![new_service("803-24-PRTITV-1000123")]);
    let a_service = first_service_id(primero, &a);
    let b = primero.seed_person(&people[1], vec![new_service("803-24-PRTITV-1000124")]);
    let b_service = first_service_id(primero, &b);
    decide(primero, &a, &a_service, "rejected", Some(REASON));
    decide(primero, &b, &b_service, "on_hold", None);

    let run1 = run_flow(&h.config, "dtp-1.2", env.clone()).await;
    assert_eq!(
        run1.outcome(&format!("{a}/{a_service}")),
        "sent",
        "{:#}",
        run1.report
    );
    assert_eq!(
        run1.record(&format!("{b}/{b_service}"))["outcome"]["code"],
        "unmapped"
    );
    let case = primero.case(&a).unwrap();
    let expected = json!({
        "case_id": case["case_id"],
        "primero_user": case["owned_by"],
        "progres_interventionnumber": "803-24-PRTITV-1000123",
        "status": "rejected",
        "closure_reason": REASON,
        "request_type": "ReceiveDecisionOutgoingReferral",
    });
    let bodies = dtp
        .sim()
        .bodies(DtpEndpoint::ReceiveDecisionOutgoingReferral);
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        serde_json::to_string(&bodies[0]).unwrap(),
        serde_json::to_string(&expected).unwrap()
    );

    // Unchanged: not posted again. Changed: posted again.
    let run2 = run_flow(&h.config, "dtp-1.2", env.clone()).await;
    assert_eq!(run2.count("sent"), 0, "{:#}", run2.report);
    assert_eq!(
        dtp.sim()
            .bodies(DtpEndpoint::ReceiveDecisionOutgoingReferral)
            .len(),
        1
    );
    decide(primero, &a, &a_service, "accepted", Some(""));
    let run3 = run_flow(&h.config, "dtp-1.2", env.clone()).await;
    assert_eq!(run3.outcome(&format!("{a}/{a_service}")), "sent");
    let bodies = dtp
        .sim()
        .bodies(DtpEndpoint::ReceiveDecisionOutgoingReferral);
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["status"], "acknowledged");
    assert_eq!(bodies[1]["closure_reason"], "No reason specified.");

    for run in [&run1, &run2, &run3] {
        run.assert_no_personal_data(&people, &[REASON]);
    }
}

/// The DTP 2-3 inbox handler against the Primero simulator (Gambella mappings).
async fn dtp_23_handler(sims: &Simulators) -> DecisionHandler {
    let project = ProjectDirs::locate().expect("project folder");
    project
        .build_jobs(&[JOB_DTP_23.to_string()])
        .expect("jobs build");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let cfg = &sims.primero_config;
    let app = App::new(
        store,
        Arc::new(JobRuntime::new(RuntimeConfig::default()).unwrap()),
        PrimeroConfig::new(
            sims.primero.base_url(),
            PrimeroAuth::Basic {
                user_name: cfg.user_name.clone(),
                password: cfg.password.clone(),
            },
        ),
        None,
        &[project.job_wasm(JOB_DTP_23)],
        &project.mappings("ethiopia-gambella"),
    )
    .await
    .unwrap();
    DecisionHandler::new(&app)
}

/// A rejection-reason code the mapping does not list does not hold the
/// decision back: it is delivered with the raw code as its reason, and the
/// run report warns of the mapping gap (table and code only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_2_3_delivers_a_decision_whose_reason_code_is_unmapped_and_warns() {
    let sims = Simulators::start_loopback().await.unwrap();
    let handler = dtp_23_handler(&sims).await;
    let primero = sims.primero_sim();
    let mut gen = PeopleGenerator::new(231);
    let service = uuid::Uuid::new_v4().to_string();
    let (case, case_id, refs) =
        referred_to_unhcr(primero, &gen.person(), std::slice::from_ref(&service));
    let suffix = &service[service.len() - 12..];
    let body = decision_message(&[SimDecision {
        org_referral_id: format!("{case_id}#{suffix}"),
        review_decision: "125080001".into(),
        rejection_reason: Some("125080009".into()),
        rejection_comment: Some(COMMENT.into()),
        referral_number: "REF-IOP-DAD-000000778".into(),
    }]);
    let report = handler
        .handle(
            InboxKind::PrimeroIncomingReferralDecision,
            "receipt-gap",
            &body,
            TODAY,
            &MessageClaim::unclaimed(),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.records[0].outcome, RecordOutcome::Updated { .. }),
        "{report:?}"
    );
    assert_eq!(
        referral_status(primero, &case, &refs[0]),
        (
            ReferralStatus::Rejected,
            Some(format!("125080009: {COMMENT}"))
        )
    );
    let notes = serde_json::to_value(&report.notes).unwrap();
    assert_eq!(
        notes,
        json!([{
            "source_id": report.records[0].source_id,
            "level": "warning",
            "note": "mapping-gap",
            "table": "inbound-rejection-reasons",
            "code": "125080009",
        }])
    );
    let text = report.to_string();
    assert!(
        text.contains("mapping gap: table inbound-rejection-reasons has no entry for 125080009"),
        "{text}"
    );
    assert!(!text.contains(COMMENT), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_2_3_decides_the_referral_of_the_suffix_and_is_safe_to_repeat() {
    let sims = Simulators::start_loopback().await.unwrap();
    let handler = dtp_23_handler(&sims).await;

    let primero = sims.primero_sim();
    let mut gen = PeopleGenerator::new(230);
    let service = uuid::Uuid::new_v4().to_string();
    // Another service of the case shares all but the last character.
    let mut other = service.clone();
    other.pop();
    other.push(if service.ends_with('0') { '1' } else { '0' });
    let (case, case_id, refs) =
        referred_to_unhcr(primero, &gen.person(), &[other, service.clone()]);
    let suffix = &service[service.len() - 12..];
    let decision = |review: &str, reason: Option<&str>, org: String| SimDecision {
        org_referral_id: org,
        review_decision: review.into(),
        rejection_reason: reason.map(str::to_string),
        rejection_comment: Some(COMMENT.into()),
        referral_number: "REF-IOP-DAD-000000777".into(),
    };
    let body = decision_message(&[
        decision(
            "125080001",
            Some("125080001"),
            format!("{case_id}#{suffix}"),
        ),
        // Unknown decision code: the original wrote it into Primero raw.
        decision("125080003", None, format!("{case_id}#{suffix}")),
        decision("125080000", None, format!("{case_id}#000000000000")),
    ]);
    let ids: Vec<String> = body["interventions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["progres_interoperabilityreferralid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    let report = handler
        .handle(
            InboxKind::PrimeroIncomingReferralDecision,
            "receipt-1",
            &body,
            TODAY,
            &MessageClaim::unclaimed(),
        )
        .await
        .unwrap();
    assert_eq!(report.records.len(), 3);
    assert!(
        matches!(report.records[0].outcome, RecordOutcome::Updated { .. }),
        "{report:?}"
    );
    assert!(
        matches!(&report.records[1].outcome, RecordOutcome::Failed { code, .. } if code == "unmapped"),
        "{report:?}"
    );
    assert!(
        matches!(&report.records[2].outcome, RecordOutcome::Failed { code, .. } if code == "not-found"),
        "{report:?}"
    );
    assert_eq!(report.records[0].source_id, ids[0]);
    assert_eq!(
        referral_status(primero, &case, &refs[1]),
        (
            ReferralStatus::Rejected,
            Some(format!("Individual Not Match UNHCR ID: {COMMENT}"))
        )
    );
    assert_eq!(
        referral_status(primero, &case, &refs[0]).0,
        ReferralStatus::InProgress
    );

    // DTP re-sends the message: nothing changes, the decision counts as applied.
    let again = handler
        .handle(
            InboxKind::PrimeroIncomingReferralDecision,
            "receipt-2",
            &body,
            TODAY,
            &MessageClaim::unclaimed(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            again.records[0].outcome,
            RecordOutcome::AlreadyPresent { .. }
        ),
        "{again:?}"
    );
    assert_eq!(
        referral_status(primero, &case, &refs[0]).0,
        ReferralStatus::InProgress
    );
}

/// The ingestion body holding the record of `external_id`, and the record
/// (a body carries up to 1,000 records since issue 18).
fn ingested<'a>(
    bodies: &'a [bridge_sim::ping::ReceivedBody],
    external_id: &str,
) -> Option<(&'a bridge_sim::ping::ReceivedBody, &'a Value)> {
    bodies.iter().find_map(|b| {
        b.body["Data"]
            .as_array()?
            .iter()
            .find(|r| r["ExternalId"] == external_id)
            .map(|r| (b, r))
    })
}

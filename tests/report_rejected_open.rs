//! `bridge report rejected-open` end to end (issue 16 part 5): PING 1.1
//! creates cases from proGres referrals in the Primero simulator, the
//! caseworkers decide, PING 1.2 sends the decisions back; the report, run
//! through the real binary, lists exactly the open cases created from
//! proGres whose every proGres referral was rejected, with ids and dates
//! and nothing personal.

use std::path::{Path, PathBuf};
use std::process::Command;

use bridge_demo::scenario::Simulators;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::ping::SimIntervention;
use bridge_sim::primero::PrimeroSim;
use bridge_testkit::cli::{output_off_runtime, text};
use bridge_testkit::personal::assert_absent;
use serde_json::{json, Map, Value};

const JOBS: [&str; 2] = ["ping-1.1", "ping-1.2"];
const TODAY: &str = "2025-06-01";
/// A caseworker's free text: never in the report.
const REASON: &str = "Family moved to another camp";

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn bridge(args: &[&str], env: &[(&'static str, String)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(args)
        .envs(env.iter().cloned())
        .current_dir(std::env::temp_dir());
    output_off_runtime(command).await
}

async fn flow(config: &Path, flow: &str, env: &[(&'static str, String)]) {
    let c = config.to_str().unwrap();
    let out = bridge(
        &[
            "flow", "run", "--init", flow, "--config", c, "--today", TODAY, "--json",
        ],
        env,
    )
    .await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{flow}: not JSON ({e}): {}", text(&out)));
    assert!(report["aborted"].is_null(), "{flow}: {report:#}");
}

/// The one case of the person, and its proGres services' ids.
fn case_of(primero: &PrimeroSim, person: &Person) -> (String, Vec<String>) {
    let ids = primero.find_by_individual_no(&person.progres_id);
    assert_eq!(ids.len(), 1, "{}", person.progres_id);
    let case = primero.case(&ids[0]).unwrap();
    let services = case["services_section"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["unique_id"].as_str().unwrap().to_string())
        .collect();
    (ids[0].clone(), services)
}

fn decide(primero: &PrimeroSim, case: &str, service: &str, status: &str) {
    let mut svc = obj(json!({"unique_id": service, "unhcr_referral_status": status}));
    if status == "rejected" {
        svc.insert("unhcr_referral_rejection_reason".into(), json!(REASON));
    }
    primero
        .update_case(case, obj(json!({"services_section": [svc]})))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_open_cases_from_progres_with_every_referral_rejected() {
    let project = ProjectDirs::locate().expect("project folder");
    let names: Vec<String> = JOBS.iter().map(|j| j.to_string()).collect();
    project.build_jobs(&names).expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    for job in JOBS {
        std::fs::copy(project.job_wasm(job), jobs.join(format!("{job}.wasm"))).unwrap();
    }
    let config: PathBuf = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        sims.config_toml(&jobs, &project.mappings("kenya-dadaab")),
    )
    .unwrap();
    let env = sims.secret_env();
    let primero = sims.primero_sim();

    // Five children referred by proGres; the fourth twice.
    let mut gen = PeopleGenerator::new(160);
    let people: Vec<Person> = (0..5).map(|_| gen.person()).collect();
    for (i, p) in people.iter().enumerate() {
        sims.ping_sim()
            .add_intervention(SimIntervention::for_person(p.clone(), 1600 + i as u64));
    }
    sims.ping_sim()
        .add_intervention(SimIntervention::for_person(people[3].clone(), 1699));
    flow(&config, "ping-1.1", &env).await;

    let [rejected, accepted, closed, twice, mixed] =
        [0, 1, 2, 3, 4].map(|i| case_of(primero, &people[i]));
    assert_eq!(twice.1.len(), 2);
    // proGres carries no consent: the caseworkers record it, or the consent
    // gate keeps ping-1.2 from sending the decisions back.
    for (case, _) in [&rejected, &accepted, &closed, &twice, &mixed] {
        primero
            .update_case(
                case,
                obj(json!({"consent_for_services": true, "disclosure_other_orgs": true})),
            )
            .unwrap();
    }
    decide(primero, &rejected.0, &rejected.1[0], "rejected");
    decide(primero, &accepted.0, &accepted.1[0], "accepted");
    decide(primero, &closed.0, &closed.1[0], "rejected");
    primero
        .update_case(&closed.0, obj(json!({"status": "closed"})))
        .unwrap();
    decide(primero, &twice.0, &twice.1[0], "rejected");
    decide(primero, &twice.0, &twice.1[1], "rejected");
    decide(primero, &mixed.0, &mixed.1[0], "rejected");
    // A case a caseworker created, its proGres service rejected: not created from proGres.
    let own = primero.seed_person(
        &gen.person(),
        vec![obj(json!({
            "service_type": "alternative_care",
            "service_request_agency": "UNHCR",
            "service_referral": "external_referral",
            "unhcr_referral_status": "rejected",
            "progres_interventionnumber": "803-24-PRTITV-0001234",
        }))],
    );
    primero
        .update_case(&own, obj(json!({"created_by": "cw_amal"})))
        .unwrap();
    flow(&config, "ping-1.2", &env).await;
    // The mixed case gets a second, undecided proGres referral: not listed.
    primero
        .update_case(
            &mixed.0,
            obj(json!({"services_section": [{
                "progres_interventionnumber": "803-24-PRTITV-0009999",
                "unhcr_referral_status": "pending",
                "service_request_agency": "UNHCR",
            }]})),
        )
        .unwrap();

    let c = config.to_str().unwrap();
    let out = bridge(&["report", "rejected-open", "--config", c, "--json"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["complete"], true);
    let cases = report["cases"].as_array().unwrap();
    let ids: Vec<&str> = cases
        .iter()
        .map(|c| c["case_record_id"].as_str().unwrap())
        .collect();
    let want = [rejected.0.as_str(), twice.0.as_str()];
    assert_eq!(ids.len(), 2, "{report:#}");
    assert!(want.iter().all(|w| ids.contains(w)), "{report:#}");

    let row = cases
        .iter()
        .find(|c| c["case_record_id"] == rejected.0.as_str())
        .unwrap();
    let case = primero.case(&rejected.0).unwrap();
    assert_eq!(row["case_id"], case["case_id"]);
    assert_eq!(row["case_id_display"], case["case_id_display"]);
    assert_eq!(row["unhcr_individual_no"], people[0].progres_id.as_str());
    assert_eq!(row["created_at"], case["created_at"]);
    assert_eq!(row["status"], "open");
    // The day ping-1.2 sent the rejection to proGres, from the state database.
    assert!(
        row["last_rejected_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{row:#}"
    );
    let numbers: Vec<&str> = cases
        .iter()
        .find(|c| c["case_record_id"] == twice.0.as_str())
        .unwrap()["intervention_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(numbers.len(), 2);
    assert!(numbers.iter().all(|n| !n.contains(',')), "{numbers:?}");

    // The table for people: the same cases; nothing personal in either form.
    let table = bridge(&["report", "rejected-open", "--config", c], &env).await;
    assert_eq!(table.status.code(), Some(0), "{}", text(&table));
    let all = format!("{}{}", text(&out), text(&table));
    assert!(all.contains(&rejected.0) && !all.contains(&accepted.0) && !all.contains(&closed.0));
    assert!(!all.contains(&own) && !all.contains(&mixed.0));
    for p in &people {
        assert_absent("report", &all, p.personal_data());
    }
    assert!(!all.contains(REASON));
}

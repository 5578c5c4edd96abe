//! End to end: the real `bridge` binary against the Primero and PING
//! simulators on loopback. The simulators run inside this test so it can look
//! at what Primero and proGres hold afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bridge_demo::scenario::{seed_workflow_1_1, Seed11, Simulators};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::{PendingRowShape, SimIntervention, TRANSFER_STATUS_PENDING};
use bridge_sim::primero::SimRole;
use bridge_testkit::cli::output_off_runtime;
use serde_json::Value;

const JOB: &str = "ping-1.1";

fn project() -> ProjectDirs {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[JOB.to_string()]).expect("jobs build");
    project
}

struct Harness {
    sims: Simulators,
    seed: Seed11,
    config: PathBuf,
    _tmp: tempfile::TempDir,
}

async fn harness(seed: u64) -> Harness {
    let (sims, config, tmp) = simulators().await;
    let seed = seed_workflow_1_1(&sims, seed);
    Harness {
        sims,
        seed,
        config,
        _tmp: tmp,
    }
}

/// The simulators, empty, and a bridge config for them.
async fn simulators() -> (Simulators, PathBuf, tempfile::TempDir) {
    let project = project();
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        sims.config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab")),
    )
    .unwrap();
    (sims, config, tmp)
}

/// Run the binary off the async runtime's threads (the simulators live on them).
async fn bridge(args: Vec<String>, env: Vec<(&'static str, String)>, cwd: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(&args)
        .envs(env)
        .env("BRIDGE_LOG", "debug")
        .current_dir(cwd);
    output_off_runtime(command).await
}

async fn run_flow(h: &Harness) -> (Value, String) {
    let (report, output, code) = run_ping_11(&h.sims, &h.config).await;
    // Some records are held/failed by design: exit 2, not 1.
    assert_eq!(code, Some(2), "{output}");
    (report, output)
}

/// The report, what the binary printed, and its exit code.
async fn run_ping_11(sims: &Simulators, config: &Path) -> (Value, String, Option<i32>) {
    let args = vec![
        "flow".into(),
        "run".into(),
        "--init".into(),
        "ping-1.1".into(),
        "--config".into(),
        config.display().to_string(),
        "--today".into(),
        "2025-06-01".into(),
        "--json".into(),
    ];
    let out = bridge(args, sims.secret_env(), &std::env::temp_dir()).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\n{stderr}"));
    (report, format!("{stdout}\n{stderr}"), out.status.code())
}

fn outcome_of<'a>(report: &'a Value, source_id: &str) -> &'a Value {
    report["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_id"] == source_id)
        .unwrap_or_else(|| panic!("no record {source_id} in report"))
}

fn case_by_individual<'a>(cases: &'a [Value], id: &str) -> Vec<&'a Value> {
    cases
        .iter()
        .filter(|c| c["unhcr_individual_no"] == id)
        .collect()
}

fn services(case: &Value) -> Vec<Value> {
    case["services_section"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_1_1_end_to_end_creates_appends_and_never_duplicates() {
    let h = harness(11).await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();

    let (report, output) = run_flow(&h).await;
    assert_eq!(report["fetched"], 7, "{report:#}");

    // New cases, one per new referral, with the mapped fields.
    let cases = primero.cases();
    assert_eq!(cases.len(), h.seed.cases_before + 3);
    for (i, id) in h.seed.created_ids.iter().enumerate() {
        let rec = outcome_of(&report, id);
        assert_eq!(rec["outcome"]["outcome"], "created", "{rec:#}");
        assert_eq!(rec["acknowledged"], true);
        let person = &h.seed.people[i];
        let found = case_by_individual(&cases, &person.progres_id);
        assert_eq!(found.len(), 1, "one case for {}", person.progres_id);
        let case = found[0];
        assert_eq!(case["id"], rec["outcome"]["case_id"]);
        assert_eq!(case["unhcr_id_no"], person.registration_group.as_str());
        assert_eq!(case["date_of_birth"], person.date_of_birth.as_str());
        assert_eq!(case["name_first"], person.given_name.as_str());
        assert_eq!(case["module_id"], "primeromodule-cp");
        assert_eq!(case["owned_by"], "progresv4_primero_intake");
        let svc = services(case);
        assert_eq!(svc.len(), 1);
        assert_eq!(svc[0]["unhcr_referral_status"], "pending");
        assert_eq!(svc[0]["service_implementing_agency"], "UNICEF");
        assert!(svc[0]["unique_id"].is_string(), "server-assigned unique_id");
        let number = svc[0]["progres_interventionnumber"].as_str().unwrap();
        assert_eq!(
            number.split(',').nth(1),
            Some(id.as_str()),
            "composite number"
        );
    }
    // The 4-join-row referral: 2 languages, in row order, mapped.
    let first = case_by_individual(&cases, &h.seed.people[0].progres_id)[0];
    assert_eq!(
        first["language"],
        serde_json::json!(["language2", "language1"])
    );
    // "BIA" is accepted and mapped.
    let third = case_by_individual(&cases, &h.seed.people[2].progres_id)[0];
    assert_eq!(
        services(third)[0]["service_type"],
        "focuses_non_specialized_mhpss_care"
    );

    // Appended to the existing case; demographics untouched.
    let updated = outcome_of(&report, &h.seed.updated_id);
    assert_eq!(updated["outcome"]["outcome"], "updated");
    let person = &h.seed.people[3];
    let existing = case_by_individual(&cases, &person.progres_id);
    assert_eq!(existing.len(), 1);
    assert_eq!(services(existing[0]).len(), 2);
    assert!(existing[0].get("owned_by") != Some(&Value::from("progresv4_primero_intake")));

    // The re-send is recognised: still one service.
    let dup = outcome_of(&report, &h.seed.duplicate_id);
    assert_eq!(dup["outcome"]["outcome"], "already-present");
    assert_eq!(dup["acknowledged"], true);
    let resent = case_by_individual(&cases, &h.seed.people[4].progres_id);
    assert_eq!(services(resent[0]).len(), 1);

    // Unmapped service type: failed with the table and value, not written.
    let unmapped = outcome_of(&report, &h.seed.unmapped_id);
    assert_eq!(unmapped["outcome"]["code"], "unmapped");
    assert!(unmapped["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("inbound-service-types"));
    assert!(case_by_individual(&cases, &h.seed.people[5].progres_id).is_empty());

    // Ambiguous match: held with both candidates, neither case touched.
    let held = outcome_of(&report, &h.seed.ambiguous_id);
    assert_eq!(held["outcome"]["reason"], "ambiguous-match");
    let mut candidates: Vec<String> = held["outcome"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    candidates.sort();
    let mut seeded = h.seed.ambiguous_candidates.clone();
    seeded.sort();
    assert_eq!(candidates, seeded);
    for c in case_by_individual(&cases, &h.seed.people[6].progres_id) {
        assert!(services(c).is_empty());
    }

    // proGres: transfer status written for the five delivered, with ExternalId =
    // the intervention id; the two undelivered stay pending.
    let mut delivered: Vec<&String> = h.seed.created_ids.iter().collect();
    delivered.push(&h.seed.updated_id);
    delivered.push(&h.seed.duplicate_id);
    for id in &delivered {
        assert_eq!(
            ping.transfer_status(id).as_deref(),
            Some(TRANSFER_STATUS_PENDING),
            "transfer status of {id}"
        );
    }
    let records = ping.ingestion_records();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(
            delivered.iter().any(|d| **d == r.external_id),
            "ExternalId {}",
            r.external_id
        );
        assert_eq!(
            r.field("progres_primerotransferstatusdate"),
            Some(&Value::from("2025-06-01"))
        );
    }
    let mut pending = ping.pending_intervention_ids();
    pending.sort();
    let mut expected_pending = vec![h.seed.unmapped_id.clone(), h.seed.ambiguous_id.clone()];
    expected_pending.sort();
    assert_eq!(pending, expected_pending);

    // Second run: nothing new is written, nothing duplicated.
    let (report2, output2) = run_flow(&h).await;
    assert_eq!(report2["fetched"], 2);
    assert_eq!(primero.cases().len(), cases.len());
    assert_eq!(primero.cases(), cases, "a re-run changed Primero");
    assert_eq!(ping.ingestion_records().len(), 5);

    // No personal data in anything the binary printed (debug logs included).
    for person in &h.seed.people {
        for secret in [
            &person.given_name,
            &person.family_name,
            &person.middle_name,
            &person.date_of_birth,
            &person.phone,
        ] {
            assert!(
                !output.contains(secret.as_str()) && !output2.contains(secret.as_str()),
                "personal data `{secret}` in bridge output"
            );
        }
    }
    // Nor a credential.
    for (_, value) in h.sims.secret_env() {
        assert!(
            !output.contains(&value),
            "a credential leaked into the output"
        );
    }
}

/// PING serving SHP-2747 rows as OpenFn/ping-primero's sample shows them
/// (the intervention id only as `progres_intervention`): the referrals are
/// delivered and acknowledged, not failed as bad input for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_1_1_takes_pending_rows_without_lpinterventionid() {
    let h = harness(14).await;
    let ping = h.sims.ping_sim();
    ping.set_pending_row_shape(PendingRowShape::Sample2023);

    let (report, _) = run_flow(&h).await;
    let cases = h.sims.primero_sim().cases();
    for (i, id) in h.seed.created_ids.iter().enumerate() {
        let rec = outcome_of(&report, id);
        assert_eq!(rec["outcome"]["outcome"], "created", "{rec:#}");
        assert_eq!(rec["acknowledged"], true, "{rec:#}");
        let case = case_by_individual(&cases, &h.seed.people[i].progres_id)[0];
        let number = services(case)[0]["progres_interventionnumber"]
            .as_str()
            .unwrap()
            .to_string();
        // Workflow 1.2 reads the intervention id back from this number.
        assert_eq!(number.split(',').nth(1), Some(id.as_str()), "{number}");
        assert_eq!(
            ping.transfer_status(id).as_deref(),
            Some(TRANSFER_STATUS_PENDING)
        );
    }
    assert_eq!(
        outcome_of(&report, &h.seed.updated_id)["outcome"]["outcome"],
        "updated"
    );
    let record = ping
        .ingestion_records()
        .into_iter()
        .find(|r| r.external_id == h.seed.created_ids[0])
        .expect("transfer status of the first referral");
    assert_eq!(
        record.field("progres_lpinterventionid"),
        Some(&Value::from(h.seed.created_ids[0].as_str()))
    );
}

/// Primero v2.11+ drops a filter on a field the API user's role may not
/// read and answers its whole scope. With one other child's case in scope,
/// the bridge used to append the referral to that child's case; it must hold
/// the referral and say why, writing nothing and acknowledging nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_filter_on_the_individual_number_holds_the_referral() {
    let (sims, config, _tmp) = simulators().await;
    let primero = sims.primero_sim();
    let ping = sims.ping_sim();
    let mut people = PeopleGenerator::new(31);
    let other_child = people.person();
    primero.seed_person(&other_child, Vec::new());
    let referred = people.person();
    let id = ping.add_intervention(SimIntervention::for_person(referred, 31_001));
    primero.set_role(SimRole::bridge().without_read("unhcr_individual_no"));
    let before = primero.cases();

    let (report, output, _) = run_ping_11(&sims, &config).await;
    let rec = outcome_of(&report, &id);
    assert_eq!(rec["outcome"]["outcome"], "held", "{rec:#}");
    let reason = rec["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("filter-not-applied") && reason.contains("unhcr_individual_no"),
        "{reason}"
    );
    assert_eq!(rec["acknowledged"], false, "{rec:#}");
    assert_eq!(primero.cases(), before, "Primero was written to");
    assert!(ping.ingestion_records().is_empty());
    assert!(output.contains("Primero ignored a case filter"), "{output}");

    // Once the role may read the field, the referral goes to a new case.
    primero.set_role(SimRole::bridge());
    let (report, _, _) = run_ping_11(&sims, &config).await;
    assert_eq!(outcome_of(&report, &id)["outcome"]["outcome"], "created");
    assert_eq!(primero.cases().len(), before.len() + 1);
}

/// A role that may not write the intervention number: Primero creates the
/// case without it and answers 200. The bridge must see it, not call it
/// delivered, and not send it again (every re-send would create another
/// case): dead-lettered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_loses_the_intervention_number_is_dead_lettered_not_repeated() {
    let (sims, config, _tmp) = simulators().await;
    let primero = sims.primero_sim();
    let ping = sims.ping_sim();
    let mut people = PeopleGenerator::new(32);
    let id = ping.add_intervention(SimIntervention::for_person(people.person(), 32_001));
    primero
        .set_role(SimRole::bridge().without_write("services_section.progres_interventionnumber"));

    let (report, _, _) = run_ping_11(&sims, &config).await;
    let rec = outcome_of(&report, &id);
    assert_eq!(rec["outcome"]["outcome"], "dead-lettered", "{rec:#}");
    assert_eq!(rec["outcome"]["code"], "write-incomplete", "{rec:#}");
    assert_eq!(rec["acknowledged"], false);
    assert_eq!(primero.cases().len(), 1);

    let (report, _, _) = run_ping_11(&sims, &config).await;
    assert_eq!(
        outcome_of(&report, &id)["outcome"]["outcome"],
        "parked",
        "{report:#}"
    );
    assert_eq!(primero.cases().len(), 1, "a second case was created");
}

/// An individual number that is not a proGres number is refused before it
/// reaches Primero's search (which would answer a malformed value with an
/// empty 200, and the bridge would create a case), and the reason does not
/// repeat the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_individual_number_is_refused_before_searching() {
    let (sims, config, _tmp) = simulators().await;
    let primero = sims.primero_sim();
    let ping = sims.ping_sim();
    let mut people = PeopleGenerator::new(33);
    let mut person = people.person();
    person.progres_id = "803-1000\")] || $.x == (\"1".to_string();
    let id = ping.add_intervention(SimIntervention::for_person(person.clone(), 33_001));

    let (report, _, _) = run_ping_11(&sims, &config).await;
    let rec = outcome_of(&report, &id);
    assert_eq!(rec["outcome"]["code"], "malformed-id", "{rec:#}");
    assert!(!rec.to_string().contains("$.x"), "{rec:#}");
    assert!(primero.cases().is_empty());
    assert_eq!(primero.request_count("GET /api/v2/cases"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_run_with_a_bad_config_names_the_problem() {
    let h = harness(12).await;
    // Without the secrets in the environment.
    let out = bridge(
        vec![
            "flow".into(),
            "run".into(),
            "--init".into(),
            "ping-1.1".into(),
            "--config".into(),
            h.config.display().to_string(),
        ],
        vec![],
        &std::env::temp_dir(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BRIDGE_PING_PASSWORD") && stderr.contains("is not set"),
        "{stderr}"
    );
    // Nothing was fetched or written.
    assert_eq!(h.sims.ping_sim().pending_intervention_ids().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_command_succeeds() {
    let project = project();
    let out = bridge(vec!["demo".into()], vec![], &project.root).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo OK"), "{stdout}");
}

//! The cut-over from the OpenFn jobs (docs/operator/cutover.md), end to end:
//! the real `bridge` binary against the simulators.
//!
//! - A cursor flow with neither a stored nor an initial cursor is refused and
//!   reads and sends nothing; with an initial cursor, a record older than it
//!   is not sent.
//! - `bridge flow run <flow> --dry-run` sends no write (the simulators'
//!   request counters), leaves the state file byte-identical, reports what
//!   it would write, and a normal run afterwards still delivers it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bridge_demo::scenario::{sim_initial_cursor_toml, Simulators};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::ping::SimIntervention;
use bridge_sim::primero::{NewSimReferral, PrimeroSim, SimUser};
use bridge_testkit::cli::output_off_runtime;
use serde_json::{json, Map, Value};

const TODAY: &str = "2025-06-01";

struct Harness {
    sims: Simulators,
    config: PathBuf,
    state: PathBuf,
    _tmp: tempfile::TempDir,
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Simulators and a Kenya (PING) config; `initial`: the `[flows]` sections
/// (the simulators' config has them for every cursor flow).
async fn harness(initial: Option<&str>) -> Harness {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[]).expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut text = sims.config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab"));
    if let Some(sections) = initial {
        text = text.replace(&sim_initial_cursor_toml(), sections);
    }
    let config = tmp.path().join("bridge.toml");
    std::fs::write(&config, text).unwrap();
    Harness {
        sims,
        config,
        state: tmp.path().join("state.db"),
        _tmp: tmp,
    }
}

async fn bridge(h: &Harness, flow: &str, extra: &[&str]) -> Output {
    // `--init`: the first run of these fresh deployments creates the state
    // database (a dry run never creates or changes it).
    let mut args: Vec<String> = ["flow", "run", flow, "--init", "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(h.config.display().to_string());
    args.extend(["--today".into(), TODAY.into(), "--json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let env = h.sims.secret_env();
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(&args)
        .envs(env)
        .current_dir(std::env::temp_dir());
    output_off_runtime(command).await
}

fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source_id"].as_str().unwrap().to_string(),
                r["outcome"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Requests that change something at a partner, per the simulators' counters.
fn writes(sims: &Simulators) -> (u64, usize) {
    let primero: u64 = sims
        .primero_sim()
        .request_counts()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GET ") && k != "POST /api/v2/tokens")
        .map(|(_, n)| n)
        .sum();
    let ping = sims
        .ping_sim()
        .requests()
        .iter()
        .filter(|r| r.path.contains("/api/ingestion/"))
        .count();
    (primero, ping)
}

/// An intervention in proGres and its case in Primero, as 1.1 leaves them;
/// (case record id, service id).
fn referred(sims: &Simulators, person: Person, n: u64) -> (String, String) {
    let iv = SimIntervention::for_person(person.clone(), n);
    let composite = format!(
        "{},{},{}",
        iv.intervention_number, iv.lpinterventionid, iv.business_unit
    );
    sims.ping_sim().add_intervention(iv);
    let primero = sims.primero_sim();
    let service = obj(json!({
        "service_type": "alternative_care",
        "service_request_agency": "UNHCR",
        "service_referral": "external_referral",
        "service_implementing_agency": "UNICEF",
        "unhcr_referral_status": "pending",
        "progres_interventionnumber": composite,
    }));
    let id = primero.seed_person(&person, vec![service]);
    let sid = primero.case(&id).unwrap()["services_section"][0]["unique_id"]
        .as_str()
        .unwrap()
        .to_string();
    (id, sid)
}

fn decide(primero: &PrimeroSim, case: &str, service: &str) {
    let svc = obj(json!({"unique_id": service, "unhcr_referral_status": "accepted"}));
    primero
        .update_case(case, obj(json!({"services_section": [svc]})))
        .unwrap();
}

fn state_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_flow_without_any_cursor_is_refused_and_sends_nothing() {
    let h = harness(Some("")).await;
    let mut gen = PeopleGenerator::new(301);
    let (case, service) = referred(&h.sims, gen.person(), 1);
    decide(h.sims.primero_sim(), &case, &service);
    h.sims.primero_sim().reset_request_counts();

    for flow in ["ping-1.2", "ping-2.1"] {
        let out = bridge(&h, flow, &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("[flows.\"{flow}\"]"))
                && stderr.contains("initial_cursor")
                && stderr.contains("bridge cursor set"),
            "{stderr}"
        );
    }
    // Nothing read from Primero, nothing sent to proGres.
    assert_eq!(h.sims.primero_sim().request_count("GET /api/v2/cases"), 0);
    assert_eq!(writes(&h.sims), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_initial_cursor_a_historic_decision_is_not_sent() {
    let mut gen = PeopleGenerator::new(302);
    // Seed the historic decision first, then take the cut-over moment.
    let h0 = harness(None).await;
    // Primero stamps whole seconds: the history, the cut-over and the new
    // decision each on a second of their own.
    let primero = h0.sims.primero_sim();
    let t0 = chrono::Utc::now() + chrono::Duration::seconds(1);
    let at = |s: i64| {
        chrono::DurationRound::duration_trunc(t0, chrono::Duration::seconds(1)).unwrap()
            + chrono::Duration::seconds(s)
    };
    primero.pin_clock(Some(at(0)));
    let (old_case, old_service) = referred(&h0.sims, gen.person(), 1);
    decide(primero, &old_case, &old_service);
    let cutover = at(1).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    primero.pin_clock(Some(at(2)));
    let (new_case, new_service) = referred(&h0.sims, gen.person(), 2);
    decide(primero, &new_case, &new_service);
    primero.pin_clock(None);
    let text = std::fs::read_to_string(&h0.config).unwrap().replace(
        &sim_initial_cursor_toml(),
        &format!("[flows.\"ping-1.2\"]\ninitial_cursor = \"{cutover}\"\n\n"),
    );
    std::fs::write(&h0.config, text).unwrap();

    let out = bridge(&h0, "ping-1.2", &[]).await;
    let r = report(&out);
    assert_eq!(
        outcomes(&r),
        vec![(format!("{new_case}/{new_service}"), "sent".to_string())],
        "{r:#}"
    );
    assert_eq!(h0.sims.ping_sim().ingestion_records().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_write_nothing_report_the_records_and_a_real_run_still_delivers() {
    let h = harness(None).await;
    let mut gen = PeopleGenerator::new(303);
    // A state file to compare: one real run of each flow with nothing to do.
    for flow in ["ping-1.1", "ping-1.2", "ping-2.1"] {
        let out = bridge(&h, flow, &[]).await;
        assert!(
            out.status.code() == Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // 1.1: a pending intervention; 1.2: a decision; 2.1: a referral to UNHCR.
    let iv = SimIntervention::for_person(gen.person(), 7);
    let pending = h.sims.ping_sim().add_intervention(iv);
    let (case, service) = referred(&h.sims, gen.person(), 8);
    decide(h.sims.primero_sim(), &case, &service);
    let primero = h.sims.primero_sim();
    let mut worker = SimUser::new("cw_dry");
    worker.full_name = "Worker cw_dry".into();
    worker.position = Some("Case Worker".into());
    worker.email = Some("cw_dry@ngo.example".into());
    worker.phone = Some("+254700000123".into());
    primero.add_user(worker);
    let person = gen.person();
    let mut data = bridge_sim::primero::case_for_person(
        &person,
        vec![obj(json!({
            "service_type": "legal_support",
            "service_implementing_agency": "UNHCR",
            "service_response_type": "service_provision",
        }))],
    );
    data.insert("owned_by".into(), json!("cw_dry"));
    let referred_case = primero.insert_case(data).unwrap();
    let referred_service = primero.case(&referred_case).unwrap()["services_section"][0]
        ["unique_id"]
        .as_str()
        .unwrap()
        .to_string();
    primero
        .add_referral(
            &referred_case,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                transitioned_to_agency: Some("UNHCR".into()),
                service_record_id: Some(referred_service.clone()),
                ..NewSimReferral::default()
            },
        )
        .unwrap();

    let before = state_bytes(&h.state);
    assert!(!before.is_empty());
    let expected = [
        ("ping-1.1", pending.clone(), "create-case"),
        (
            "ping-1.2",
            format!("{case}/{service}"),
            "ingest-transfer-status",
        ),
        ("ping-2.1", referred_service.clone(), "ingest-referral"),
    ];
    for (flow, source, action) in &expected {
        let writes_before = writes(&h.sims);
        let out = bridge(&h, flow, &["--dry-run"]).await;
        let r = report(&out);
        assert_eq!(out.status.code(), Some(0), "{r:#}");
        assert_eq!(r["dry_run"], true, "{r:#}");
        let record = r["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["source_id"] == source.as_str())
            .unwrap_or_else(|| panic!("{flow}: no {source} in {r:#}"));
        assert_eq!(record["outcome"]["outcome"], "would-write", "{r:#}");
        assert_eq!(record["outcome"]["action"], *action, "{r:#}");
        if *flow == "ping-1.1" {
            assert_eq!(record["would_acknowledge"], "transfer-status", "{r:#}");
        }
        assert_eq!(writes(&h.sims), writes_before, "{flow}: a write went out");
        assert!(
            state_bytes(&h.state) == before,
            "{flow}: the state file changed"
        );
    }
    assert_eq!(writes(&h.sims), (0, 0), "no partner write in any dry run");
    assert!(h
        .sims
        .ping_sim()
        .pending_intervention_ids()
        .contains(&pending));

    // The real runs still deliver what the dry runs reported.
    for (flow, source, _) in &expected {
        let out = bridge(&h, flow, &[]).await;
        let r = report(&out);
        let got = outcomes(&r);
        let (_, outcome) = got
            .iter()
            .find(|(s, _)| s == source)
            .unwrap_or_else(|| panic!("{flow}: {r:#}"));
        assert!(
            ["created", "sent"].contains(&outcome.as_str()),
            "{flow}: {r:#}"
        );
    }
    assert!(h.sims.ping_sim().pending_intervention_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_fail_the_checks_and_a_real_run_naming_file_line_and_key() {
    let h = harness(None).await;
    let project = ProjectDirs::locate().unwrap();
    let text = std::fs::read_to_string(&h.config)
        .unwrap()
        .replace("allow_placeholders = true\n", "");
    std::fs::write(&h.config, text).unwrap();
    let run = |args: Vec<String>| {
        let env = h.sims.secret_env();
        Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    };
    let config = h.config.display().to_string();
    let mappings = project.mappings("kenya-dadaab").display().to_string();
    for args in [
        vec!["config".to_string(), "check".into(), config.clone()],
        vec!["mappings".to_string(), "check".into(), mappings.clone()],
        vec![
            "flow".to_string(),
            "run".into(),
            "ping-1.1".into(),
            "--config".into(),
            config.clone(),
        ],
    ] {
        let out = tokio::task::block_in_place(|| run(args.clone()));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains("deployment.toml:") && all.contains("deployment.admin_email"),
            "{args:?}: {all}"
        );
    }
    // Nothing was read or written by the refused run.
    assert_eq!(h.sims.ping_sim().requests().len(), 0);
    // The explicit opt-ins still load the shipped example.
    let out = tokio::task::block_in_place(|| {
        run(vec![
            "mappings".into(),
            "check".into(),
            "--allow-placeholders".into(),
            mappings.clone(),
        ])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

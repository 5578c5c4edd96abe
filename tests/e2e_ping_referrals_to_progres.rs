//! End to end, Primero referral → proGres in both designs: the real
//! `bridge flow run ping-2.1` (PING workflow 2.1) against the Primero and PING
//! simulators, and `bridge flow run dtp-2.1` (DTP flow 2-1/2-2) against the
//! Primero and DTP simulators, on loopback; several invocations share one state
//! database, then a look at what proGres (or DTP) received.

use std::path::PathBuf;
use std::process::{Command, Output};

use bridge_demo::scenario::Simulators;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::dtp::DtpEndpoint;
use bridge_sim::dtp::{DtpSim, DtpSimConfig, RunningDtpSim, TestPki};
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::primero::{case_for_person, NewSimReferral, PrimeroSim, SimUser};
use bridge_store::{OpenMode, SqliteStore, Store as _};
use bridge_testkit::cli::output_off_runtime;
use bridge_testkit::personal::assert_absent;
use serde_json::{json, Map, Value};

const JOB: &str = "ping-2.1";
const FLOW: &str = "ping-2.1";
const DTP_JOB: &str = "dtp-2.1";
const DTP_FLOW: &str = "dtp-2.1";
/// deployment `unhcr_user` of mappings/kenya-dadaab and mappings/ethiopia-gambella.
const UNHCR_USER: &str = "unhcr_cw";
const GAMBELLA_UNHCR_USER: &str = "unhcr_cw@cpims-gambella.primero.org";
const DTP_KEY_ENV: &str = "BRIDGE_DTP_SUBSCRIPTION_KEY";
const LEGAL_SUPPORT: &str = "7ad37dd0-0306-e611-80d9-00155d34051a";
const HEALTH: &str = "f98e1516-0406-e611-80d9-00155d34051a";
const UNACCOMPANIED_OR_SEPARATED: &str = "abc5b4fb-8f76-e611-80c9-00155d340529";

struct Harness {
    sims: Simulators,
    dtp: Option<RunningDtpSim>,
    flow: &'static str,
    config: PathBuf,
    mappings: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Harness {
    /// Secrets the binary reads from the environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.sims.secret_env();
        if let Some(dtp) = &self.dtp {
            env.push((DTP_KEY_ENV, dtp.sim().config().subscription_key.clone()));
        }
        env
    }

    fn dtp(&self) -> &DtpSim {
        self.dtp.as_ref().unwrap().sim()
    }
}

/// Simulators, a private jobs folder holding only the flow's job (so another
/// design's job cannot refuse this country's mappings) and a private copy of
/// the country's mappings (so a test can edit a table as an operator would).
async fn harness_for(flow: &'static str, job: &str, country: &str) -> Harness {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[job.to_string()]).expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::copy(project.job_wasm(job), jobs.join(format!("{job}.wasm"))).unwrap();
    let mappings = tmp.path().join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    for entry in std::fs::read_dir(project.mappings(country)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, mappings.join(path.file_name().unwrap())).unwrap();
    }
    let mut toml = sims.config_toml(&jobs, &mappings);
    let mut dtp = None;
    if flow == DTP_FLOW {
        // Design A has no PING: its deployment has no partner or interop id.
        toml = without_section(&toml, "[ping]");
        let pki = TestPki::generate();
        let files = pki.write_files(tmp.path()).unwrap();
        let sim = DtpSim::start_loopback(DtpSimConfig::new(&pki))
            .await
            .unwrap();
        toml.push_str(&sim.config_toml(&files, DTP_KEY_ENV));
        dtp = Some(sim);
    }
    // These tests follow a failed call across runs: no retries inside a run
    // (tests/durable.rs and host/tests/partner_faults.rs cover those), and
    // one delivery at a time, so "refuse the next record" picks a known one
    // (concurrent delivery: tests/fault_matrix, `bridge bench`).
    toml.push_str("\n[retry]\nmax_attempts = 1\n\n[delivery]\nrecord_concurrency = 1\n");
    let config = tmp.path().join("bridge.toml");
    std::fs::write(&config, toml).unwrap();
    Harness {
        sims,
        dtp,
        flow,
        config,
        mappings,
        _tmp: tmp,
    }
}

async fn harness() -> Harness {
    harness_for(FLOW, JOB, "kenya-dadaab").await
}

/// `toml` without the table `header` (up to the next table).
fn without_section(toml: &str, header: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            skipping = line.trim() == header;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Run the binary off the async runtime's threads (the simulators live on them).
async fn bridge(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(&args)
        .envs(env)
        .env("BRIDGE_LOG", "debug")
        .current_dir(std::env::temp_dir());
    output_off_runtime(command).await
}

/// One `bridge flow run ping-2.1`; returns the JSON report and everything printed.
async fn run_flow(h: &Harness, exit: i32) -> (Value, String) {
    let args = vec![
        "flow".into(),
        "run".into(),
        "--init".into(),
        h.flow.into(),
        "--config".into(),
        h.config.display().to_string(),
        "--today".into(),
        "2025-06-01".into(),
        "--json".into(),
    ];
    let out = bridge(args, h.env()).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(exit),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\n{stderr}"));
    assert!(report["aborted"].is_null(), "{report:#}\n{stderr}");
    (report, format!("{stdout}\n{stderr}"))
}

/// `source_id → (outcome label, code)` of a report.
fn outcomes(report: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source_id"].as_str().unwrap().to_string(),
                r["outcome"]["outcome"].as_str().unwrap().to_string(),
                r["outcome"]["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expect(pairs: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    v.sort();
    v
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// A caseworker (invented); `complete` gives e-mail and phone.
fn caseworker(primero: &PrimeroSim, user_name: &str, complete: bool) -> SimUser {
    let mut u = SimUser::new(user_name);
    u.full_name = format!("Worker {user_name}");
    u.position = Some("Case Worker".into());
    if complete {
        u.email = Some(format!("{user_name}@ngo.example"));
        u.phone = Some("+254700000123".into());
    }
    primero.add_user(u.clone());
    u
}

/// A case for `person` owned by `owner`, with one service; returns (record id, case_id, service id).
fn case_with_service(
    primero: &PrimeroSim,
    person: &Person,
    owner: &str,
    service_type: &str,
    agency: &str,
) -> (String, String, String) {
    let service = obj(json!({
        "service_type": service_type,
        "service_implementing_agency": agency,
        "service_response_type": "service_provision",
        "service_referral_notes": format!("Needs help, see {}", person.family_name),
    }));
    let mut data = case_for_person(person, vec![service]);
    data.insert("owned_by".into(), json!(owner));
    data.insert(
        "protection_concerns".into(),
        json!(["psychosocial_distress", "separated", "child_labour"]),
    );
    next_second(primero);
    let id = primero.insert_case(data).unwrap();
    let case = primero.case(&id).unwrap();
    (
        id,
        case["case_id"].as_str().unwrap().to_string(),
        case["services_section"][0]["unique_id"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// Primero stamps whole seconds and orders ties arbitrarily; these tests
/// follow records across runs in a known order, so each change they make
/// gets a second of its own (the same-second case is tested in
/// `flows::case_scan` and `e2e_ping_decisions`).
fn next_second(primero: &PrimeroSim) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(0);
    let now = chrono::Utc::now().timestamp();
    let step = |last: i64| last.max(now) + 1;
    let last = NEXT
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(step(last)))
        .unwrap_or_else(|last| last);
    primero.pin_clock(chrono::DateTime::from_timestamp(step(last), 0));
}

fn refer(primero: &PrimeroSim, case: &str, service: &str, to: &str) -> String {
    next_second(primero);
    primero
        .add_referral(
            case,
            NewSimReferral {
                transitioned_to: to.into(),
                transitioned_to_agency: Some("UNHCR".into()),
                service_record_id: Some(service.into()),
                ..NewSimReferral::default()
            },
        )
        .unwrap()
        .created_at
}

fn assert_no_personal_data(outputs: &[&str], people: &[Person], workers: &[SimUser]) {
    let mut terms: Vec<&str> = people.iter().flat_map(Person::personal_data).collect();
    for w in workers {
        terms.push(&w.full_name);
        terms.extend(w.email.as_deref());
        terms.extend(w.phone.as_deref());
    }
    for out in outputs {
        assert_absent("bridge output", out, terms.iter().copied());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_go_once_refusals_and_unmapped_are_retried_edits_are_not_resent() {
    let h = harness().await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(21);
    let people: Vec<Person> = (0..6).map(|_| gen.person()).collect();
    let full = caseworker(primero, "cw_full", true);
    let partial = caseworker(primero, "cw_partial", false);

    // A: refused once by proGres; B: owner without e-mail/phone; C: a service
    // type Kenya does not map; D: referred, but not to UNHCR's agency; E: plain.
    let a = case_with_service(primero, &people[0], "cw_full", "legal_support", "UNHCR");
    let b = case_with_service(primero, &people[1], "cw_partial", "medical", "UNHCR");
    let c = case_with_service(primero, &people[2], "cw_full", "alternative_care", "UNHCR");
    let d = case_with_service(primero, &people[3], "cw_full", "medical", "UNICEF");
    let e = case_with_service(primero, &people[4], "cw_full", "medical", "UNHCR");
    let a_referred = refer(primero, &a.0, &a.2, UNHCR_USER);
    for x in [&b, &c, &e] {
        refer(primero, &x.0, &x.2, UNHCR_USER);
    }
    refer(primero, &d.0, &d.2, "ngo_partner");
    ping.refuse_next_async_records(1, "Validation failed");

    // Run 1.
    let (r1, out1) = run_flow(&h, 2).await;
    assert_eq!(r1["fetched"], 5, "{r1:#}");
    assert_eq!(
        outcomes(&r1),
        expect(&[
            (&a.2, "failed", "refused"),
            (&b.2, "sent", ""),
            (&c.2, "failed", "unmapped"),
            (&e.2, "sent", ""),
        ])
    );
    let unmapped = r1["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_id"] == c.2.as_str())
        .unwrap();
    let reason = unmapped["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("outbound-service-guids") && reason.contains("alternative_care"),
        "{reason}"
    );
    assert_eq!(ping.interop_referrals().len(), 2);
    // Nothing went out for C or D (the original sent C as legal support).
    let ingested = ping.ingestion_records();
    assert_eq!(ingested.len(), 3);
    // A field without a value (no other requested service here) is left
    // out, as the original's undefined values: never sent as null.
    for r in &ingested {
        for (name, value) in &r.fields {
            assert!(!value.is_null(), "{name} sent as null");
        }
        assert_eq!(r.field("progres_otherrequestedservices"), None);
    }
    assert!(!ingested
        .iter()
        .any(|r| r.external_id == c.1 || r.external_id == d.1));
    // The admin fallback is used for B, and said so (ids and field names only).
    let b_record = ingested.iter().find(|r| r.external_id == b.1).unwrap();
    assert_eq!(
        b_record.field("progres_orgemail"),
        Some(&json!("notavailable@primero.org"))
    );
    assert_eq!(
        b_record.field("progres_orgphonenumber"),
        Some(&json!("0000000000"))
    );
    assert_eq!(
        b_record.field("progres_orgposition"),
        Some(&json!("Case Worker"))
    );
    assert_eq!(
        b_record.field("progres_requestedservice"),
        Some(&json!(HEALTH))
    );
    let line = out1
        .lines()
        .find(|l| l.contains("caseworker profile incomplete"))
        .unwrap_or_else(|| panic!("admin fallback not logged:\n{out1}"));
    assert!(
        line.contains(&b.0) && line.contains(&b.2) && line.contains("email,phone"),
        "{line}"
    );
    assert_eq!(
        out1.matches("caseworker profile incomplete").count(),
        1,
        "only B's owner lacks contact details"
    );

    // Run 2: the refused referral is sent again and now confirmed; B and E are
    // recognised, not re-sent; C still waits for its mapping.
    let (r2, out2) = run_flow(&h, 2).await;
    assert_eq!(
        outcomes(&r2),
        expect(&[
            (&a.2, "sent", ""),
            (&b.2, "already-sent", ""),
            (&c.2, "failed", "unmapped"),
            (&e.2, "already-sent", ""),
        ])
    );
    assert_eq!(ping.interop_referrals().len(), 3);
    let a_sent = ping
        .ingestion_records()
        .into_iter()
        .filter(|r| r.external_id == a.1)
        .collect::<Vec<_>>();
    assert_eq!(a_sent.len(), 2, "refused once, sent again once");
    let fields = &a_sent[1];
    let person = &people[0];
    for (name, value) in [
        ("progres_externalguid", json!(a.0)),
        ("progres_externalid", json!(a.1)),
        ("progres_offlineid", json!(a.1)),
        ("progres_orgreferralid", json!(a.2)),
        (
            "progres_businessunit",
            json!("577ccdf6-86de-e811-80d8-001dd8b71fe3"),
        ),
        (
            "progres_organizationfrom",
            json!("c00582a6-d8f6-f011-8406-6045bd8ea5fb"),
        ),
        ("progres_orgemail", json!("cw_full@ngo.example")),
        ("progres_referraldate", json!(&a_referred[..10])),
        ("progres_requestedservice", json!(LEGAL_SUPPORT)),
        ("progres_spneedcategory", json!(UNACCOMPANIED_OR_SEPARATED)),
        ("progres_pocsex", json!(person.sex_code.to_string())),
        ("progres_pocfirstname", json!(person.given_name)),
        ("progres_pocdateofbirth", json!(person.date_of_birth)),
        ("progres_unhcrid", json!(person.progres_id)),
        ("progres_pocotheridnumber", json!(person.registration_group)),
    ] {
        assert_eq!(fields.field(name), Some(&value), "{name}");
    }

    // The operator maps alternative_care (hot-reloadable data, no code): run 3 sends C.
    let table = h.mappings.join("outbound-service-guids.toml");
    let mut text = std::fs::read_to_string(&table).unwrap();
    text.push_str("\"alternative_care\" = \"e3a13f7d-0406-e611-80d9-00155d34051a\"\n");
    std::fs::write(&table, text).unwrap();
    let (r3, out3) = run_flow(&h, 0).await;
    assert_eq!(
        outcomes(&r3),
        expect(&[(&c.2, "sent", ""), (&e.2, "already-sent", "")])
    );
    assert_eq!(ping.interop_referrals().len(), 4);

    // Run 4: B's service is edited (no new referral) and F is referred: only F goes.
    next_second(primero);
    primero
        .update_case(
            &b.0,
            obj(json!({"services_section": [{"unique_id": b.2, "service_referral_notes": "updated"}]})),
        )
        .unwrap();
    let f = case_with_service(primero, &people[5], "cw_full", "shelter", "UNHCR");
    refer(primero, &f.0, &f.2, UNHCR_USER);
    let (r4, out4) = run_flow(&h, 0).await;
    let r4_outcomes = outcomes(&r4);
    assert!(
        r4_outcomes.contains(&(f.2.clone(), "sent".into(), String::new())),
        "{r4:#}"
    );
    assert!(
        r4_outcomes
            .iter()
            .all(|(id, label, _)| id == &f.2 || label == "already-sent"),
        "{r4:#}"
    );
    assert!(
        !r4_outcomes.iter().any(|(id, _, _)| id == &b.2),
        "edited service re-sent: {r4:#}"
    );

    // proGres holds exactly one referral per referred UNHCR service.
    let mut referred: Vec<String> = ping
        .interop_referrals()
        .iter()
        .map(|r| r.org_referral_id.clone().unwrap())
        .collect();
    referred.sort();
    let mut want = vec![a.2, b.2, c.2, e.2, f.2];
    want.sort();
    assert_eq!(referred, want);

    assert_no_personal_data(&[&out1, &out2, &out3, &out4], &people, &[full, partial]);
    for (_, value) in h.env() {
        for out in [&out1, &out2, &out3, &out4] {
            assert!(!out.contains(&value), "a credential leaked into the output");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_read_beyond_primeros_1000_cap() {
    let h = harness().await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(22);
    caseworker(primero, "cw_full", true);
    let first_person = gen.person();
    let first = case_with_service(primero, &first_person, "cw_full", "medical", "UNHCR");
    refer(primero, &first.0, &first.2, UNHCR_USER);
    let mut people = vec![first_person];
    for _ in 0..1003 {
        let p = gen.person();
        primero.seed_person(&p, vec![]);
        people.push(p);
    }
    // Changed last: on the second page of 1000.
    let last_person = gen.person();
    let last = case_with_service(primero, &last_person, "cw_full", "shelter", "UNHCR");
    refer(primero, &last.0, &last.2, UNHCR_USER);
    people.push(last_person);

    let (r1, out1) = run_flow(&h, 0).await;
    assert_eq!(r1["fetched"], 1005, "{}", r1["fetched"]);
    assert_eq!(
        outcomes(&r1),
        expect(&[(&first.2, "sent", ""), (&last.2, "sent", "")])
    );
    assert_eq!(ping.interop_referrals().len(), 2);
    assert!(primero.request_count("GET /api/v2/cases") >= 2);

    // The committed cursor is the last case read: the next run reads only it.
    let (r2, _) = run_flow(&h, 0).await;
    assert_eq!(r2["fetched"], 1, "{r2:#}");
    assert_eq!(outcomes(&r2), expect(&[(&last.2, "already-sent", "")]));
    assert_eq!(ping.interop_referrals().len(), 2);
    assert_no_personal_data(&[&out1], &people[..3], &[]);
}

/// [`harness`] working on `records` records at once.
async fn harness_with_concurrency(records: usize) -> Harness {
    let h = harness().await;
    let toml = std::fs::read_to_string(&h.config).unwrap();
    let toml = toml.replace(
        "record_concurrency = 1",
        &format!("record_concurrency = {records}"),
    );
    std::fs::write(&h.config, toml).unwrap();
    h
}

/// With `record_concurrency` above one, the referrals of a page's cases are
/// read concurrently: one at a time, these reads were workflow 2.1's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pages_case_referrals_are_read_concurrently() {
    let h = harness_with_concurrency(8).await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(31);
    caseworker(primero, "cw_full", true);
    let mut people = Vec::new();
    let mut services = Vec::new();
    for _ in 0..8 {
        let p = gen.person();
        let (id, _, service) = case_with_service(primero, &p, "cw_full", "medical", "UNHCR");
        refer(primero, &id, &service, UNHCR_USER);
        people.push(p);
        services.push(service);
    }
    // An instance with many users: the owner is looked up by name, not
    // found by paging through all of them.
    for i in 0..1500 {
        primero.add_user(SimUser::new(format!("other_user_{i}")));
    }
    // Enough latency for concurrent reads to overlap at the simulator.
    primero.set_latency(std::time::Duration::from_millis(50));
    primero.reset_in_flight();

    let (report, out) = run_flow(&h, 0).await;
    let sent: Vec<(&str, &str, &str)> = services.iter().map(|s| (s.as_str(), "sent", "")).collect();
    assert_eq!(outcomes(&report), expect(&sent));
    assert_eq!(ping.interop_referrals().len(), 8);
    assert_eq!(primero.request_count("GET /api/v2/cases/{id}/referrals"), 8);
    assert_eq!(
        primero.request_count("GET /api/v2/users"),
        1,
        "one look-up of the one owner"
    );
    let seen = primero.max_in_flight_seen();
    assert!(seen > 1, "{seen} Primero call(s) in flight at once");
    assert_no_personal_data(&[&out], &people, &[]);
}

/// The owners of a page's first cases are looked up at once, while their
/// referrals are read, each once; every referral still carries its own
/// case owner's contact. One after another, a page whose first cases had
/// many owners waited a round trip per owner with every slot idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_of_a_pages_cases_are_looked_up_at_once() {
    let h = harness_with_concurrency(8).await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(37);
    let owners = ["cw_one", "cw_two", "cw_three", "cw_four"];
    for owner in owners {
        caseworker(primero, owner, true);
    }
    let mut people = Vec::new();
    let mut cases = Vec::new();
    for i in 0..8 {
        let p = gen.person();
        let owner = owners[i % owners.len()];
        let (id, case_id, service) = case_with_service(primero, &p, owner, "medical", "UNHCR");
        refer(primero, &id, &service, UNHCR_USER);
        people.push(p);
        cases.push((case_id, service, owner));
    }
    // Enough latency for lookups sent together to overlap at the simulator.
    primero.set_latency(std::time::Duration::from_millis(50));
    primero.reset_in_flight();

    let (report, out) = run_flow(&h, 0).await;
    let sent: Vec<(&str, &str, &str)> = cases
        .iter()
        .map(|(_, s, _)| (s.as_str(), "sent", ""))
        .collect();
    assert_eq!(outcomes(&report), expect(&sent));
    assert_eq!(
        primero.request_count("GET /api/v2/users"),
        owners.len() as u64,
        "one look-up per owner"
    );
    let together = primero.max_in_flight_seen_for("GET /api/v2/users");
    assert!(
        together > 1,
        "owner look-ups one after another ({together} at once)"
    );
    let ingested = ping.ingestion_records();
    assert_eq!(ingested.len(), cases.len());
    for (case_id, _, owner) in &cases {
        let record = ingested.iter().find(|r| &r.external_id == case_id).unwrap();
        assert_eq!(
            record.field("progres_orgemail"),
            Some(&json!(format!("{owner}@ngo.example"))),
            "case {case_id} carries its own owner's contact"
        );
    }
    assert_no_personal_data(&[&out], &people, &[]);
}

/// Keys of the DTP referral body, in the order of spec example 10.
const DTP_BODY_KEYS: &[&str] = &[
    "primero_user",
    "position",
    "email",
    "phone",
    "full_name",
    "request_type",
    "service_implementing_agency",
    "service_response_day_time",
    "service_type",
    "service_type_other",
    "service_referral_notes",
    "owned_by_agency_id",
    "unhcr_individual_no",
    "unhcr_id_no",
    "name_first",
    "name_last",
    "name_middle",
    "name_nickname",
    "date_of_birth",
    "sex",
    "address_current",
    "telephone_current",
    "language",
    "id",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_2_1_posts_each_referral_once_and_retries_what_dtp_refused() {
    let h = harness_for(DTP_FLOW, DTP_JOB, "ethiopia-gambella").await;
    let primero = h.sims.primero_sim();
    let mut gen = PeopleGenerator::new(23);
    let people: Vec<Person> = (0..4).map(|_| gen.person()).collect();
    let full = caseworker(primero, "cw_full", true);
    let partial = caseworker(primero, "cw_partial", false);

    // G1: DTP answers 503 once; G2: owner without e-mail/phone; G3: a service
    // type without a Gambella label; G4: not referred to the UNHCR user, so
    // outside the query (`associated_user_names`).
    let g1 = case_with_service(primero, &people[0], "cw_full", "legal_support", "UNHCR");
    let g2 = case_with_service(primero, &people[1], "cw_partial", "medical", "UNHCR");
    let g3 = case_with_service(
        primero,
        &people[2],
        "cw_full",
        "child_protection_x",
        "UNHCR",
    );
    let g4 = case_with_service(primero, &people[3], "cw_full", "legal_support", "UNHCR");
    for g in [&g1, &g2, &g3] {
        refer(primero, &g.0, &g.2, GAMBELLA_UNHCR_USER);
    }
    refer(primero, &g4.0, &g4.2, "ngo_partner");
    let path = h.dtp().config().path(DtpEndpoint::ReceiveIncomingReferral);
    h.dtp().fail_next(&path, 503, 1);

    let (r1, out1) = run_flow(&h, 2).await;
    assert_eq!(r1["fetched"], 3, "{r1:#}");
    assert_eq!(
        outcomes(&r1),
        expect(&[
            (&g1.2, "failed", "partner-unavailable"),
            (&g2.2, "sent", ""),
            (&g3.2, "failed", "unmapped"),
        ])
    );
    let bodies = h.dtp().bodies(DtpEndpoint::ReceiveIncomingReferral);
    assert_eq!(bodies.len(), 1);
    let b2 = &bodies[0];
    assert_eq!(b2["position"], "Case Worker");
    assert_eq!(b2["full_name"], "Worker cw_partial");
    assert_eq!(b2["email"], "notavailable@primero.org");
    assert_eq!(b2["phone"], "0000000000");
    assert_eq!(b2["service_type"], "Registration Service");
    let line = out1
        .lines()
        .find(|l| l.contains("caseworker profile incomplete"))
        .unwrap_or_else(|| panic!("admin fallback not logged:\n{out1}"));
    assert!(
        line.contains(&g2.2) && line.contains("email,phone"),
        "{line}"
    );

    // Run 2: G1 goes now; G2 is not sent twice; G3 still has no label.
    let (r2, out2) = run_flow(&h, 2).await;
    assert_eq!(
        outcomes(&r2),
        expect(&[
            (&g1.2, "sent", ""),
            (&g2.2, "already-sent", ""),
            (&g3.2, "failed", "unmapped"),
        ])
    );
    let bodies = h.dtp().bodies(DtpEndpoint::ReceiveIncomingReferral);
    assert_eq!(bodies.len(), 2);
    let b1 = &bodies[1];
    let keys: Vec<&str> = b1.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, DTP_BODY_KEYS, "example 10's fields, in its order");
    let p = &people[0];
    let sex = if p.sex_code == 125_080_001 {
        "male"
    } else {
        "female"
    };
    let expected = json!({
        "primero_user": "cw_full",
        "position": "Case Worker",
        "email": "cw_full@ngo.example",
        "phone": "+254700000123",
        "full_name": "Worker cw_full",
        "request_type": "ReceiveIncomingReferral",
        "service_implementing_agency": "UNICEF",
        "service_response_day_time": null,
        "service_type": "Adolescent and Youth Empowerment",
        "service_type_other": null,
        "service_referral_notes": format!("Needs help, see {}", p.family_name),
        "owned_by_agency_id": "UNICEF",
        "unhcr_individual_no": p.progres_id,
        "unhcr_id_no": p.registration_group,
        "name_first": p.given_name,
        "name_last": p.family_name,
        "name_middle": p.middle_name,
        "name_nickname": null,
        "date_of_birth": p.date_of_birth,
        "sex": sex,
        "address_current": null,
        "telephone_current": p.phone,
        "language": "Other",
        "id": format!("{}#{}", g1.1, &g1.2[g1.2.len() - 12..]),
    });
    assert_eq!(b1, &expected);
    assert!(!bodies
        .iter()
        .any(|b| b["unhcr_individual_no"] == people[3].progres_id.as_str()));

    assert_no_personal_data(&[&out1, &out2], &people, &[full, partial]);
    for (_, value) in h.env() {
        for out in [&out1, &out2] {
            assert!(!out.contains(&value), "a credential leaked into the output");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_check_status_is_asked_again_never_sent_twice() {
    let h = harness().await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    let mut gen = PeopleGenerator::new(24);
    let person = gen.person();
    caseworker(primero, "cw_full", true);
    let a = case_with_service(primero, &person, "cw_full", "medical", "UNHCR");
    refer(primero, &a.0, &a.2, UNHCR_USER);
    ping.fail_next(bridge_sim::ping::CHECK_STATUS_PATH, 503, 1);

    // Submitted, outcome unknown: not delivered, and remembered as submitted.
    let (r1, _) = run_flow(&h, 2).await;
    assert_eq!(
        outcomes(&r1),
        expect(&[(&a.2, "failed", "partner-unavailable")])
    );
    assert_eq!(ping.ingestion_records().len(), 1);

    // Next run asks about the same transaction instead of sending again.
    let (r2, _) = run_flow(&h, 0).await;
    assert_eq!(outcomes(&r2), expect(&[(&a.2, "sent", "")]));
    assert_eq!(ping.ingestion_records().len(), 1, "sent twice");
    let referrals = ping.interop_referrals();
    assert_eq!(referrals.len(), 1);
    assert_eq!(
        r2["records"][0]["outcome"]["target_id"],
        referrals[0].id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_the_state_database_refused_are_asked_again_never_sent_twice() {
    let h = harness().await;
    let primero = h.sims.primero_sim();
    let ping = h.sims.ping_sim();
    // A first run with nothing to send creates the state database.
    run_flow(&h, 0).await;
    let state = h.config.parent().unwrap().join("state.db");
    let store = SqliteStore::open(&state, OpenMode::Existing).await.unwrap();
    // The page-end write of what PING confirmed fails; the "submitted"
    // write before it goes through.
    sqlx::query(
        "CREATE TRIGGER test_refuse_confirmed BEFORE UPDATE OF fingerprint ON deliveries
         WHEN NEW.fingerprint = 'delivered' BEGIN SELECT RAISE(ABORT, 'test: disk gone'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();

    let mut gen = PeopleGenerator::new(25);
    let person = gen.person();
    caseworker(primero, "cw_full", true);
    let a = case_with_service(primero, &person, "cw_full", "medical", "UNHCR");
    refer(primero, &a.0, &a.2, UNHCR_USER);
    // Confirmed by proGres but not known as delivered: held like a failure.
    let (r1, _) = run_flow(&h, 2).await;
    assert_eq!(outcomes(&r1), expect(&[(&a.2, "failed", "state")]));
    assert_eq!(ping.ingestion_records().len(), 1);
    let submitted = store.delivery(FLOW, &a.2).await.unwrap().unwrap();
    assert_eq!(submitted.fingerprint, "submitted");

    // The disk is back: PING is asked about the same transaction, nothing
    // is sent again.
    sqlx::query("DROP TRIGGER test_refuse_confirmed")
        .execute(store.pool())
        .await
        .unwrap();
    let (r2, _) = run_flow(&h, 0).await;
    assert_eq!(outcomes(&r2), expect(&[(&a.2, "sent", "")]));
    assert_eq!(ping.ingestion_records().len(), 1, "sent twice");
    let delivered = store.delivery(FLOW, &a.2).await.unwrap().unwrap();
    assert_eq!(delivered.fingerprint, "delivered");
}

/// Makes the state database refuse every write of `fingerprint` (as if the
/// process stopped right before it): the state database of `h`, opened.
async fn stop_before_recording(h: &Harness, fingerprint: &str) -> SqliteStore {
    let state = h.config.parent().unwrap().join("state.db");
    let store = SqliteStore::open(&state, OpenMode::Existing).await.unwrap();
    for (name, when) in [("insert", "INSERT"), ("update", "UPDATE OF fingerprint")] {
        sqlx::query(&format!(
            "CREATE TRIGGER test_stop_{name} BEFORE {when} ON deliveries
             WHEN NEW.fingerprint = '{fingerprint}' BEGIN SELECT RAISE(ABORT, 'test: stopped'); END"
        ))
        .execute(store.pool())
        .await
        .unwrap();
    }
    store
}

/// Undoes [`stop_before_recording`].
async fn record_again(store: &SqliteStore) {
    for name in ["insert", "update"] {
        sqlx::query(&format!("DROP TRIGGER test_stop_{name}"))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

/// A referral of `h`'s flow goes to the partner, and the run stops before
/// the flow records `fingerprint` for it (here the state database refuses
/// that one write; a SIGKILL or a lost host leaves the same state). The
/// next run must not send it again (`sent` counts what the partner got): it
/// was recorded as being sent before it went, so the next run sets it aside
/// for an operator (outcome-unknown, in the dead letter) instead.
async fn a_stopped_send_is_not_repeated(
    h: &Harness,
    fingerprint: &str,
    (service_type, to): (&str, &str),
    sent: impl Fn() -> usize,
) {
    let primero = h.sims.primero_sim();
    run_flow(h, 0).await;
    let store = stop_before_recording(h, fingerprint).await;
    let mut gen = PeopleGenerator::new(27);
    let person = gen.person();
    caseworker(primero, "cw_full", true);
    let a = case_with_service(primero, &person, "cw_full", service_type, "UNHCR");
    refer(primero, &a.0, &a.2, to);
    let (r1, _) = run_flow(h, 2).await;
    assert_eq!(outcomes(&r1), expect(&[(&a.2, "failed", "state")]));
    assert_eq!(sent(), 1);

    record_again(&store).await;
    let (r2, _) = run_flow(h, 2).await;
    assert_eq!(
        outcomes(&r2),
        expect(&[(&a.2, "dead-lettered", "outcome-unknown")])
    );
    assert_eq!(sent(), 1, "sent twice");
    let dead = store.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason_code, "outcome-unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_sent_just_before_the_run_stopped_is_not_sent_again() {
    let h = harness().await;
    let ping = h.sims.ping_sim();
    a_stopped_send_is_not_repeated(&h, "submitted", ("medical", UNHCR_USER), || {
        ping.ingestion_records().len()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_2_1_does_not_post_again_what_a_stopped_run_posted() {
    let h = harness_for(DTP_FLOW, DTP_JOB, "ethiopia-gambella").await;
    let to = ("legal_support", GAMBELLA_UNHCR_USER);
    a_stopped_send_is_not_repeated(&h, "delivered", to, || {
        h.dtp().bodies(DtpEndpoint::ReceiveIncomingReferral).len()
    })
    .await;
}

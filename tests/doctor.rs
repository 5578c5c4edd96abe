//! `bridge doctor` as an operator runs it: the real binary against the
//! simulators over loopback, a config and a mapping folder in a temp folder.
//! Each misconfiguration is provoked once; a correct setup of each design
//! is all green; and doctor writes nothing (the simulators' request logs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bridge_sim::dtp::{DtpSim, DtpSimConfig, RunningDtpSim, TestPki};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::{PingSim, PingSimConfig, RunningPingSim};
use bridge_sim::primero::{
    case_for_person, NewSimReferral, PrimeroSim, PrimeroSimConfig, RunningPrimeroSim, SimRole,
    SimUser,
};
use bridge_testkit::cli::text;
use serde_json::Value;

const PRIMERO_PASSWORD_ENV: &str = "BRIDGE_TEST_PRIMERO_PASSWORD";
const PING_PASSWORD_ENV: &str = "BRIDGE_TEST_PING_PASSWORD";
const PING_KEY_ENV: &str = "BRIDGE_TEST_PING_SUBSCRIPTION_KEY";
const DTP_KEY_ENV: &str = "BRIDGE_TEST_DTP_SUBSCRIPTION_KEY";

fn repo_deployment(country: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../mappings")
        .join(country)
        .join("deployment.toml");
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The deployment's `key = "value"` under `[deployment]`, as the bridge
/// reads it (a `CHANGE-ME: <example>` placeholder gives its example).
fn deployment_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim().trim_matches('"');
            (k.trim() == key).then(|| v.trim_start_matches("CHANGE-ME:").trim().to_string())
        })
        .unwrap_or_else(|| panic!("deployment.toml has no {key}"))
}

/// Primero with the deployment's users and one case referred to the UNHCR
/// user, as a caseworker would have.
async fn primero_for(deployment: &str) -> RunningPrimeroSim {
    let sim = PrimeroSim::new(PrimeroSimConfig::default());
    let unhcr = deployment_value(deployment, "unhcr_user");
    sim.add_user(SimUser::new(deployment_value(deployment, "intake_user")));
    sim.add_user(SimUser::new(unhcr.clone()));
    let mut people = PeopleGenerator::new(71);
    for _ in 0..3 {
        sim.insert_case(case_for_person(&people.person(), Vec::new()))
            .unwrap();
    }
    // Owned by a caseworker, as a real referred case is (an owner sees
    // every referral of its cases, whatever its role).
    let mut case = case_for_person(&people.person(), Vec::new());
    case.insert("owned_by".into(), Value::from("cp_worker"));
    let referred = sim.insert_case(case).unwrap();
    sim.add_referral(
        &referred,
        NewSimReferral {
            transitioned_to: unhcr,
            ..NewSimReferral::default()
        },
    )
    .unwrap();
    sim.start(([127, 0, 0, 1], 0).into()).await.unwrap()
}

/// One deployment under test: its simulators, folder and secrets.
struct Setup {
    primero: RunningPrimeroSim,
    ping: Option<RunningPingSim>,
    dtp: Option<RunningDtpSim>,
    pki: Option<TestPki>,
    dir: tempfile::TempDir,
    deployment: String,
    primero_url: String,
    env: Vec<(&'static str, String)>,
    /// Extra `[dtp]` lines replacing the generated certificate paths.
    dtp_identity: Option<(PathBuf, PathBuf)>,
}

impl Setup {
    async fn ping() -> Self {
        let deployment = repo_deployment("kenya-dadaab");
        let primero = primero_for(&deployment).await;
        let ping_config = PingSimConfig::default();
        let ping = PingSim::start(ping_config.clone(), ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        Self {
            primero_url: primero.base_url(),
            env: vec![
                (PRIMERO_PASSWORD_ENV, PrimeroSimConfig::default().password),
                (PING_PASSWORD_ENV, ping_config.password.clone()),
                (PING_KEY_ENV, ping_config.subscription_key.clone()),
            ],
            primero,
            ping: Some(ping),
            dtp: None,
            pki: None,
            dir: tempfile::tempdir().unwrap(),
            deployment,
            dtp_identity: None,
        }
    }

    async fn dtp() -> Self {
        let deployment = repo_deployment("ethiopia-gambella");
        let primero = primero_for(&deployment).await;
        let pki = TestPki::generate();
        let dtp = DtpSim::start_loopback(DtpSimConfig::new(&pki))
            .await
            .unwrap();
        Self {
            primero_url: primero.base_url(),
            env: vec![
                (PRIMERO_PASSWORD_ENV, PrimeroSimConfig::default().password),
                (DTP_KEY_ENV, dtp.sim().config().subscription_key.clone()),
            ],
            primero,
            ping: None,
            dtp: Some(dtp),
            pki: Some(pki),
            dir: tempfile::tempdir().unwrap(),
            deployment,
            dtp_identity: None,
        }
    }

    fn set_env(&mut self, name: &'static str, value: &str) {
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.to_string()));
    }

    /// Write the folder and run `bridge doctor --config … --json`.
    fn doctor(&self) -> Doctor {
        let dir = self.dir.path();
        let mappings = dir.join("mappings");
        std::fs::create_dir_all(&mappings).unwrap();
        std::fs::write(mappings.join("deployment.toml"), &self.deployment).unwrap();
        let mut config = format!(
            "[primero]\nbase_url = \"{}\"\nauth = \"basic\"\nuser_name = \"{}\"\npassword = {{ env = \"{PRIMERO_PASSWORD_ENV}\" }}\n\n[jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n\n",
            self.primero_url,
            PrimeroSimConfig::default().user_name,
        );
        if let Some(ping) = &self.ping {
            config.push_str(&format!(
                "[ping]\nbase_url = \"{}\"\ntoken_url = \"{}\"\nusername = \"{}\"\npassword = {{ env = \"{PING_PASSWORD_ENV}\" }}\nclient_id = \"{}\"\nsubscription_key = {{ env = \"{PING_KEY_ENV}\" }}\n\n",
                ping.base_url(),
                ping.token_url(),
                ping.sim().config().username,
                ping.sim().config().client_id,
            ));
        }
        if let (Some(dtp), Some(pki)) = (&self.dtp, &self.pki) {
            let mut files = pki.write_files(dir).unwrap();
            if let Some((cert, key)) = &self.dtp_identity {
                files.client_cert = cert.clone();
                files.client_key = key.clone();
            }
            config.push_str(&dtp.config_toml(&files, DTP_KEY_ENV));
        }
        let file = dir.join("bridge.toml");
        std::fs::write(&file, config).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(["doctor", "--json", "--config"])
            .arg(&file)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(dir)
            .output()
            .unwrap();
        Doctor::new(output)
    }
}

/// What one doctor run printed.
struct Doctor {
    output: Output,
    report: Value,
}

impl Doctor {
    fn new(output: Output) -> Self {
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e})\n{}", text(&output)));
        Self { output, report }
    }

    fn findings(&self) -> &Vec<Value> {
        self.report["findings"].as_array().expect("findings")
    }

    /// The one finding of `check`.
    fn finding(&self, check: &str) -> &Value {
        let found: Vec<&Value> = self
            .findings()
            .iter()
            .filter(|f| f["check"] == check)
            .collect();
        assert_eq!(found.len(), 1, "one `{check}` finding expected\n{self}");
        found[0]
    }

    /// `check` is an error whose message holds every word of `words` and
    /// that names a fix; doctor exits non-zero.
    fn assert_error(&self, check: &str, words: &[&str]) -> &Value {
        let f = self.finding(check);
        assert_eq!(f["severity"], "error", "{check}\n{self}");
        let message = f["message"].as_str().unwrap();
        for word in words {
            assert!(
                message.contains(word),
                "`{word}` not in {check}: {message}\n{self}"
            );
        }
        assert!(f["fix"].as_str().is_some_and(|s| !s.is_empty()), "{self}");
        assert_eq!(self.output.status.code(), Some(1), "{self}");
        assert_eq!(self.report["ok"], false);
        f
    }

    fn assert_all_green(&self) {
        let bad: Vec<&Value> = self
            .findings()
            .iter()
            .filter(|f| f["severity"] != "ok")
            .collect();
        assert!(bad.is_empty(), "not all green: {bad:#?}\n{self}");
        assert_eq!(self.output.status.code(), Some(0), "{self}");
        assert_eq!(self.report["ok"], true);
    }

    fn severity(&self, check: &str) -> String {
        self.finding(check)["severity"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl std::fmt::Display for Doctor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text(&self.output))
    }
}

const PING_CHECKS: &[&str] = &[
    "mappings",
    "primero.reachable",
    "primero.auth",
    "primero.filter.unhcr_individual_no",
    "primero.filter.case_id",
    "primero.filter.associated_user_names",
    "primero.user.intake_user",
    "primero.user.unhcr_user",
    "primero.referrals.unhcr_user",
    "ping.token",
    "ping.reachable",
    "ping.subscription_key",
    "ping.shipping_process.pending_referrals",
    "ping.shipping_process.intervention_details",
    "ping.shipping_process.decision_list",
    "ping.shipping_process.decision_details",
    "ping.shipping_process.transfer_status",
    "ping.shipping_process.referral_ingestion",
    "ping.shipping_process.decision_synced",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_ping_deployment_is_all_green() {
    let setup = Setup::ping().await;
    let run = setup.doctor();
    run.assert_all_green();
    for check in PING_CHECKS {
        assert_eq!(run.severity(check), "ok", "{check}");
    }
    let referrals = run.finding("primero.referrals.unhcr_user")["message"]
        .as_str()
        .unwrap();
    assert!(referrals.contains("is visible"), "{referrals}");
}

/// Every request doctor made was a read: Primero saw only GETs and its
/// login, PING only its token endpoint and retrieves, and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_makes_no_write_request() {
    let setup = Setup::ping().await;
    let cases_before = setup.primero.cases();
    let referrals_before: Vec<_> = cases_before
        .iter()
        .map(|c| setup.primero.referrals(c["id"].as_str().unwrap()))
        .collect();
    let ping = setup.ping.as_ref().unwrap();
    let pending_before = ping.pending_intervention_ids();
    setup.doctor().assert_all_green();

    let counts = setup.primero.request_counts();
    assert!(!counts.is_empty());
    for (key, n) in &counts {
        assert!(
            key.starts_with("GET ") || key == "POST /api/v2/tokens",
            "doctor sent {n} × {key} to Primero: {counts:?}"
        );
    }
    assert_eq!(
        counts.get("POST /api/v2/tokens"),
        None,
        "HTTP Basic: no login call: {counts:?}"
    );
    assert_eq!(setup.primero.cases(), cases_before);
    for (case, before) in cases_before.iter().zip(&referrals_before) {
        assert_eq!(
            &setup.primero.referrals(case["id"].as_str().unwrap()),
            before
        );
    }

    let requests = ping.requests();
    assert!(requests
        .iter()
        .any(|r| r.path.ends_with("retrievedatawithpaging")));
    for r in &requests {
        assert!(
            r.path.ends_with("/oauth2/v2.0/token") || r.path.ends_with("retrievedatawithpaging"),
            "doctor called PING {} {}",
            r.method,
            r.path
        );
    }
    assert!(ping.ingestion_records().is_empty());
    assert_eq!(ping.pending_intervention_ids(), pending_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primero_unreachable_is_named_with_its_url() {
    let mut setup = Setup::ping().await;
    // Bound but never listening: connections are refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    setup.primero_url = format!("http://{}", socket.local_addr().unwrap());
    let run = setup.doctor();
    let f = run.assert_error(
        "primero.reachable",
        &["connection refused", &setup.primero_url],
    );
    assert!(f["fix"].as_str().unwrap().contains("primero.base_url"));
    // Nothing that needs Primero is claimed.
    assert!(run.findings().iter().all(|f| f["check"] != "primero.auth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_primero_password_is_an_auth_error_naming_the_secret() {
    let mut setup = Setup::ping().await;
    setup.set_env(PRIMERO_PASSWORD_ENV, "not-the-password");
    let run = setup.doctor();
    assert_eq!(run.severity("primero.reachable"), "ok");
    let f = run.assert_error("primero.auth", &["refused", "bridge_api"]);
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains("primero.password") && fix.contains(PRIMERO_PASSWORD_ENV),
        "{fix}"
    );
    assert!(!run.to_string().contains("not-the-password"), "{run}");
    // One attempt only (HTTP Basic: the first read), not retried: Primero
    // locks an account after six failed logins.
    assert_eq!(setup.primero.request_count("POST /api/v2/tokens"), 0);
    assert_eq!(setup.primero.request_count("GET /api/v2/cases"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_intake_user_is_named_with_its_deployment_key() {
    let mut setup = Setup::ping().await;
    setup.deployment = setup
        .deployment
        .replace("progresv4_primero_intake\"", "progresv4_intake_typo\"");
    let run = setup.doctor();
    let f = run.assert_error("primero.user.intake_user", &["progresv4_intake_typo"]);
    assert!(f["fix"]
        .as_str()
        .unwrap()
        .contains("deployment.intake_user"));
    assert_eq!(run.severity("primero.user.unhcr_user"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_unhcr_user_is_named_with_its_deployment_key() {
    let mut setup = Setup::ping().await;
    setup.deployment = setup.deployment.replace("\"unhcr_cw\"", "\"unhcr_cw9\"");
    let run = setup.doctor();
    let f = run.assert_error("primero.user.unhcr_user", &["unhcr_cw9"]);
    assert!(f["fix"].as_str().unwrap().contains("deployment.unhcr_user"));
    assert_eq!(run.severity("primero.user.intake_user"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ping_token_names_the_credentials() {
    let mut setup = Setup::ping().await;
    setup.set_env(PING_PASSWORD_ENV, "wrong-ping-password");
    let run = setup.doctor();
    let f = run.assert_error("ping.token", &["AADB2C90225"]);
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains("ping.password") && fix.contains(PING_PASSWORD_ENV),
        "{fix}"
    );
    assert!(!run.to_string().contains("wrong-ping-password"));
    // No API call without a token.
    assert!(run
        .findings()
        .iter()
        .all(|f| f["check"] != "ping.reachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_shipping_process_is_named_with_its_key() {
    let mut setup = Setup::ping().await;
    setup.deployment = setup.deployment.replace(
        "decision_list = \"SHP-2795\"",
        "decision_list = \"SHP-9795\"",
    );
    let run = setup.doctor();
    let f = run.assert_error(
        "ping.shipping_process.decision_list",
        &["SHP-9795", "not configured"],
    );
    assert!(f["fix"]
        .as_str()
        .unwrap()
        .contains("shipping_processes.decision_list"));
    assert_eq!(
        run.severity("ping.shipping_process.pending_referrals"),
        "ok"
    );
    assert_eq!(run.severity("ping.subscription_key"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_all_green_then_a_certificate_dtp_does_not_accept() {
    let mut setup = Setup::dtp().await;
    let run = setup.doctor();
    run.assert_all_green();
    for endpoint in [
        "ReceiveIncomingReferral",
        "ReceiveDecisionOutgoingReferral",
        "Notification",
    ] {
        assert_eq!(run.severity(&format!("dtp.endpoint.{endpoint}")), "ok");
    }
    let pki = setup.pki.as_ref().unwrap();
    let certificate = run.finding("dtp.certificate")["message"].as_str().unwrap();
    assert!(
        certificate.contains(&pki.client_thumbprint()),
        "{certificate}"
    );
    let dtp = setup.dtp.as_ref().unwrap();
    assert!(dtp.sim().received().is_empty(), "doctor posted to DTP");
    assert!(dtp.sim().requests().iter().all(|r| r.method == "GET"));

    // A client certificate from another CA: refused in the handshake.
    let other = TestPki::generate();
    let other_dir = setup.dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let files = other.write_files(&other_dir).unwrap();
    setup.dtp_identity = Some((files.client_cert, files.client_key));
    let run = setup.doctor();
    let f = run.assert_error(
        "dtp.endpoint.ReceiveIncomingReferral",
        &["TLS handshake", "https://127.0.0.1"],
    );
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains("dtp.client_cert") && fix.contains(&other.client_thumbprint()),
        "{fix}"
    );
    assert!(run
        .findings()
        .iter()
        .all(|f| f["check"] != "dtp.certificate"));
    assert!(dtp.sim().received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_filter_on_unhcr_individual_no_is_an_error() {
    let setup = Setup::ping().await;
    setup
        .primero
        .set_role(SimRole::bridge().without_read("unhcr_individual_no"));
    let run = setup.doctor();
    let f = run.assert_error(
        "primero.filter.unhcr_individual_no",
        &["dropped", "4 case(s)"],
    );
    assert!(f["fix"].as_str().unwrap().contains("unhcr_individual_no"));
    assert_eq!(run.severity("primero.filter.case_id"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_filter_on_case_id_is_an_error() {
    let setup = Setup::ping().await;
    setup
        .primero
        .set_role(SimRole::bridge().without_read("case_id"));
    let run = setup.doctor();
    let f = run.assert_error("primero.filter.case_id", &["dropped"]);
    assert!(f["fix"].as_str().unwrap().contains("`case_id`"));
    assert_eq!(run.severity("primero.filter.unhcr_individual_no"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_to_the_unhcr_user_that_the_role_cannot_see_are_an_error() {
    let setup = Setup::ping().await;
    setup
        .primero
        .set_role(SimRole::bridge().without_others_referrals());
    let run = setup.doctor();
    let f = run.assert_error(
        "primero.referrals.unhcr_user",
        &["unhcr_cw", "none of their referrals"],
    );
    assert!(f["fix"].as_str().unwrap().contains("role of `bridge_api`"));
}

/// With an empty scope a dropped filter cannot be told from a working one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_scope_cannot_conclude_on_filters() {
    let mut setup = Setup::ping().await;
    let empty = PrimeroSim::new(PrimeroSimConfig::default());
    empty.add_user(SimUser::new("progresv4_primero_intake"));
    empty.add_user(SimUser::new("unhcr_cw"));
    setup.primero = empty.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    setup.primero_url = setup.primero.base_url();
    let run = setup.doctor();
    assert_eq!(
        run.severity("primero.filter.unhcr_individual_no"),
        "warning",
        "{run}"
    );
    assert_eq!(run.severity("primero.filter.case_id"), "warning");
    assert_eq!(run.output.status.code(), Some(0), "{run}");
}

/// The transport failure kinds doctor reports come from the error chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_causes_tell_dns_refused_and_a_refused_certificate_apart() {
    use bridge_partners::TransportCause;
    let http = reqwest::Client::new();
    // `.invalid` never resolves (RFC 2606).
    let err = http
        .get("http://bridge-doctor.invalid/")
        .send()
        .await
        .unwrap_err();
    assert_eq!(TransportCause::of(&err), TransportCause::Dns, "{err:?}");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/", socket.local_addr().unwrap());
    let err = http.get(&url).send().await.unwrap_err();
    assert_eq!(TransportCause::of(&err), TransportCause::Refused, "{err:?}");
}

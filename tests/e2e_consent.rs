//! The consent safeguards through the real `bridge` binary (issue 16), PING
//! design against the simulators: a referral whose case lost consent is not
//! sent and is reported `no-consent`; a shared case that loses consent
//! raises one alert, which `bridge run` delivers to the operator's webhook,
//! signed, ids only, retried after the webhook failed; `bridge alerts`
//! shows it. (Both designs' gates and alerts run in tests/e2e_round_trips.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use bridge_demo::consent::set_consent;
use bridge_demo::scenario::Simulators;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::PeopleGenerator;
use bridge_sim::primero::{NewSimReferral, SimUser};
use bridge_testkit::cli::output_off_runtime;
use bridge_testkit::personal::assert_absent;
use serde_json::{json, Value};

const SECRET: &str = "webhook-secret-for-tests-0123456789";
const SECRET_ENV: &str = "BRIDGE_ALERT_WEBHOOK_SECRET";

/// One request the webhook received: its headers and body.
type Call = (HeaderMap, Vec<u8>);

/// A webhook that fails its first call (503), then takes every alert.
#[derive(Clone, Default)]
struct Webhook {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Webhook {
    async fn start(&self) -> String {
        let calls = self.calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let calls = calls.clone();
                async move {
                    let mut calls = calls.lock().unwrap();
                    calls.push((headers, body.to_vec()));
                    if calls.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hook")
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn bridge(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(args)
        .envs(env.iter().cloned())
        .env("BRIDGE_LOG", "info")
        .current_dir(std::env::temp_dir());
    output_off_runtime(command).await
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config(sims: &Simulators, dir: &Path, project: &ProjectDirs, hook: &str) -> PathBuf {
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::copy(project.job_wasm("ping-2.1"), jobs.join("ping-2.1.wasm")).unwrap();
    let mut toml = sims.config_toml(&jobs, &project.mappings("kenya-dadaab"));
    toml.push_str(&format!(
        "\n[schedule]\n\"ping-2.1\" = \"0 0 0 1 1 * 2099\"\n\n[alerts]\nwebhook_url = \"{hook}\"\nwebhook_secret = {{ env = \"{SECRET_ENV}\" }}\nretry_secs = 1\n"
    ));
    let path = dir.join("bridge.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_consent_is_not_sent_and_a_revocation_reaches_the_webhook_signed_once() {
    let project = ProjectDirs::locate().expect("project folder");
    project
        .build_jobs(&["ping-2.1".to_string()])
        .expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let primero = sims.primero_sim();
    for name in ["unhcr_cw", "cw_consent"] {
        let mut u = SimUser::new(name);
        u.email = Some(format!("{name}@ngo.example"));
        u.phone = Some("+254700000123".into());
        u.position = Some("Case Worker".into());
        primero.add_user(u);
    }
    let mut people = PeopleGenerator::new(1606);
    let refer = |person: &bridge_sim::people::Person| {
        let service = uuid::Uuid::new_v4().to_string();
        let case = primero.seed_person(
            person,
            vec![json!({
                "unique_id": service,
                "service_type": "legal_support",
                "service_implementing_agency": "UNHCR",
            })
            .as_object()
            .cloned()
            .unwrap()],
        );
        primero
            .add_referral(
                &case,
                NewSimReferral {
                    transitioned_to: "unhcr_cw".into(),
                    service_record_id: Some(service.clone()),
                    ..NewSimReferral::default()
                },
            )
            .unwrap();
        (case, service)
    };
    let (shared, shared_service) = refer(&people.person());
    let withheld_person = people.person();
    let (withheld, withheld_service) = refer(&withheld_person);
    set_consent(&sims, &withheld, false).unwrap();

    let webhook = Webhook::default();
    let hook = webhook.start().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = config(&sims, tmp.path(), &project, &hook);
    let mut env = sims.secret_env();
    env.push((SECRET_ENV, SECRET.to_string()));
    let cfg = config.display().to_string();

    // 1. One run: the consented referral goes, the other is refused.
    let out = bridge(
        &[
            "flow", "run", "--init", "ping-2.1", "--config", &cfg, "--json",
        ],
        &env,
    )
    .await;
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let outcome = |id: &str| {
        report["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source_id"] == id)
            .map(|r| r["outcome"]["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(
        outcome(&shared_service).as_deref(),
        Some("sent"),
        "{report:#}"
    );
    assert_eq!(
        outcome(&withheld_service).as_deref(),
        Some("no-consent"),
        "{report:#}"
    );
    let ingested = sims.ping_sim().interop_referrals();
    assert_eq!(
        ingested.len(),
        1,
        "only the consented referral reached proGres"
    );
    assert_eq!(
        ingested[0].org_referral_id.as_deref(),
        Some(shared_service.as_str())
    );
    // The refusal names fields, never the child.
    assert_absent(
        "the no-consent report",
        &text(&out),
        [
            withheld_person.given_name.as_str(),
            withheld_person.family_name.as_str(),
        ],
    );

    // 2. The shared case loses consent: `bridge run --once` raises one alert;
    //    the webhook answers 503, so it waits, kept.
    set_consent(&sims, &shared, false).unwrap();
    let out = bridge(&["run", "--once", "--config", &cfg], &env).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(webhook.calls().len(), 1, "{}", text(&out));
    let out = bridge(&["alerts", "--pending", "--json", "--config", &cfg], &env).await;
    let pending: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending:#}");
    assert_eq!(pending[0]["case_id"], shared.as_str());
    assert_eq!(pending[0]["last_error"], "http-503");

    // 3. After the retry delay the next start delivers it; the case, seen
    //    again without consent, raises nothing new.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    set_consent(&sims, &shared, false).unwrap();
    let out = bridge(&["run", "--once", "--config", &cfg], &env).await;
    assert!(out.status.success(), "{}", text(&out));
    let calls = webhook.calls();
    assert_eq!(calls.len(), 2, "{}", text(&out));
    let (headers, body) = &calls[1];
    assert_eq!(calls[0].1, *body, "the retry sends the same alert");
    let signature = headers["x-bridge-signature"].to_str().unwrap();
    assert_eq!(
        signature,
        bridge_service::alerts::sign(SECRET.as_bytes(), body),
        "signed with the shared secret"
    );
    let alert: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(alert["kind"], "consent-revoked");
    assert_eq!(alert["case_id"], shared.as_str());
    assert_eq!(alert["flow"], "ping-2.1");
    // Ids only: every value is an id, a code, a timestamp or the fixed action text.
    let mut keys: Vec<&str> = alert
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "alert_id",
            "case_id",
            "flow",
            "kind",
            "raised_at",
            "run_id"
        ]
    );
    let out = bridge(&["alerts", "--json", "--config", &cfg], &env).await;
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "one alert, not one per scan"
    );
    assert!(all[0]["delivered_at"].is_string(), "{all:#}");
    // Nothing was sent to proGres about the withdrawal.
    assert_eq!(sims.ping_sim().interop_referrals().len(), 1);
}

//! Partner calls against flaky partners: retry inside a run, per-partner
//! concurrency and rate limits, and every simulator fault knob against the
//! matching client call (issues 5, 6, 7). Everything on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_partners::dtp::{DtpClient, DtpConfig, DtpEndpoint};
use bridge_partners::ping::{
    AsyncIngestionRecord, Field, IngestionRecord, PingClient, PingConfig, CHECK_STATUS_PATH,
    DEFAULT_SCOPE, RETRIEVE_PATH,
};
use bridge_partners::primero::{
    CaseQuery, PrimeroAuth, PrimeroClient, PrimeroConfig, ReferralStatus, ReferralUpdate,
};
use bridge_partners::{ConnectorError, PartnerLimits, RetryPolicy};
use bridge_sim::dtp::{DtpSim, DtpSimConfig, FaultKind as DtpFault, RunningDtpSim, TestPki};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::{
    FaultKind as PingFault, PingSim, PingSimConfig, RunningPingSim, SimIntervention, StatusShape,
    TOKEN_PATH,
};
use bridge_sim::primero::{
    Fault, NewSimReferral, PrimeroSim, PrimeroSimConfig, RunningPrimeroSim, SimPrimeroVersion,
};
use serde_json::{json, Map, Value};

const LIST_CASES: &str = "GET /api/v2/cases";
const GET_CASE: &str = "GET /api/v2/cases/{id}";
const CREATE_CASE: &str = "POST /api/v2/cases";
const TOKENS: &str = "POST /api/v2/tokens";

/// Short delays so the tests stay quick; the rules are those of the default.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        budget: Duration::from_secs(20),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

// ---- Primero ---------------------------------------------------------------

async fn primero_sim() -> RunningPrimeroSim {
    PrimeroSim::new(PrimeroSimConfig::default())
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

fn primero_config(base_url: String, token: bool) -> PrimeroConfig {
    let sim = PrimeroSimConfig::default();
    let auth = if token {
        PrimeroAuth::V210Token {
            user_name: sim.user_name,
            password: sim.password,
        }
    } else {
        PrimeroAuth::Basic {
            user_name: sim.user_name,
            password: sim.password,
        }
    };
    let mut config = PrimeroConfig::new(base_url, auth);
    config.timeout = Duration::from_secs(5);
    config.retry = fast_retry();
    config
}

fn primero(sim: &RunningPrimeroSim) -> PrimeroClient {
    PrimeroClient::new(primero_config(sim.base_url(), false)).unwrap()
}

fn seed(sim: &PrimeroSim, n: usize) -> Vec<String> {
    let mut people = PeopleGenerator::new(61);
    (0..n)
        .map(|_| sim.seed_person(&people.person(), Vec::new()))
        .collect()
}

fn new_case() -> Map<String, Value> {
    obj(json!({"name_first": "Test", "module_id": "primeromodule-cp"}))
}

#[tokio::test]
async fn listing_503_twice_then_success_is_retried() {
    let sim = primero_sim().await;
    seed(&sim, 3);
    let client = primero(&sim);
    sim.fail_next("GET", "/api/v2/cases", 503, 2);
    let cases = client.list_cases(&CaseQuery::new()).await.unwrap();
    assert_eq!(cases.len(), 3);
    assert_eq!(sim.request_count(LIST_CASES), 3);

    // With retry off the same fault is the caller's error.
    let mut config = primero_config(sim.base_url(), false);
    config.retry = RetryPolicy::none();
    let once = PrimeroClient::new(config).unwrap();
    sim.reset_request_counts();
    sim.fail_next("GET", "/api/v2/cases", 503, 1);
    let err = once.list_cases(&CaseQuery::new()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(sim.request_count(LIST_CASES), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sim = primero_sim().await;
    seed(&sim, 1);
    let client = primero(&sim);
    sim.inject_fault(
        "GET",
        "/api/v2/cases",
        Fault::Status {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    sim.reset_in_flight();
    assert_eq!(client.list_cases(&CaseQuery::new()).await.unwrap().len(), 1);
    assert_eq!(sim.request_count(LIST_CASES), 2);
    let at = sim.arrival_times();
    // The computed backoff is at most 10 ms: only Retry-After explains a second.
    assert!(
        at[1] - at[0] >= Duration::from_secs(1),
        "{:?}",
        at[1] - at[0]
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_is_not_waited_for() {
    let sim = primero_sim().await;
    let client = primero(&sim);
    sim.inject_fault(
        "GET",
        "/api/v2/cases",
        Fault::Status {
            status: 503,
            retry_after: Some(3600),
        },
        1,
    );
    let err = client.list_cases(&CaseQuery::new()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.retry_after(), Some(3600));
    assert_eq!(sim.request_count(LIST_CASES), 1);
}

/// A 500 answer to a POST may come after the case was written: repeating the
/// POST could create it twice. The client returns the error; the flow's
/// record logic searches before it creates again.
#[tokio::test]
async fn a_post_answered_500_is_not_retried() {
    let sim = primero_sim().await;
    let client = primero(&sim);
    sim.fail_next("POST", "/api/v2/cases", 500, 1);
    let err = client.create_case(&new_case()).await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(sim.request_count(CREATE_CASE), 1);

    // 502 and 504 alike.
    for status in [502, 504] {
        sim.reset_request_counts();
        sim.fail_next("POST", "/api/v2/cases", status, 1);
        let err = client.create_case(&new_case()).await.unwrap_err();
        assert_eq!(err.status(), Some(status));
        assert_eq!(sim.request_count(CREATE_CASE), 1);
    }

    // A 503 says the request was not processed: retried, created once.
    sim.reset_request_counts();
    sim.fail_next("POST", "/api/v2/cases", 503, 1);
    client.create_case(&new_case()).await.unwrap();
    assert_eq!(sim.request_count(CREATE_CASE), 2);
    assert_eq!(sim.case_count(), 1);
}

#[tokio::test]
async fn a_partner_always_answering_503_is_given_up_after_max_attempts() {
    let sim = primero_sim().await;
    let client = primero(&sim);
    sim.fail_next("GET", "/api/v2/cases", 503, 100);
    let err = client.list_cases(&CaseQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(sim.request_count(LIST_CASES), 4);
    // The same for a POST (503 is safe to repeat) …
    sim.fail_next("POST", "/api/v2/cases", 503, 100);
    client.create_case(&new_case()).await.unwrap_err();
    assert_eq!(sim.request_count(CREATE_CASE), 4);
    assert_eq!(sim.case_count(), 0);
}

#[tokio::test]
async fn hangups_are_transport_errors_retried_only_when_safe() {
    let sim = primero_sim().await;
    let ids = seed(&sim, 1);
    let client = primero(&sim);

    // GET: retried, succeeds.
    sim.inject_fault("GET", "/api/v2/cases/", Fault::Hangup, 1);
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(GET_CASE), 2);

    // POST, hung up before processing: not retried (the client cannot tell).
    sim.inject_fault("POST", "/api/v2/cases", Fault::Hangup, 1);
    let err = client.create_case(&new_case()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ConnectorError::Transport {
                connect_failed: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(sim.request_count(CREATE_CASE), 1);
    assert_eq!(sim.case_count(), 1);

    // POST, hung up after processing: the case exists, the client was not told.
    sim.inject_fault("POST", "/api/v2/cases", Fault::HangupAfter, 1);
    let err = client.create_case(&new_case()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Transport { .. }), "{err:?}");
    assert_eq!(sim.request_count(CREATE_CASE), 2);
    assert_eq!(sim.case_count(), 2);
}

/// A port nobody listens on: refused, so surely not processed, so retried
/// even for a POST, then a transport error.
#[tokio::test]
async fn a_closed_port_is_a_connect_failure_for_every_client() {
    // Bound but never listening: connections are refused, and no other
    // test's server can take the port while this test runs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let client = PrimeroClient::new(primero_config(base.clone(), false)).unwrap();
    let err = client.create_case(&new_case()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Transport {
                connect_failed: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());

    let ping = PingSim::start(PingSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = ping_config(&ping);
    config.base_url = base.clone();
    config.token_url = format!("{base}{TOKEN_PATH}");
    let client = PingClient::new(config).unwrap().with_retry(fast_retry());
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Transport {
                connect_failed: true,
                ..
            }
        ),
        "{err:?}"
    );

    let pki = TestPki::generate();
    let dtp = DtpSim::start_loopback(DtpSimConfig::new(&pki))
        .await
        .unwrap();
    let mut config = dtp_config(&pki, &dtp);
    config.urls.notification = format!("https://127.0.0.1:{port}/primero-uat/Notification");
    let client = DtpClient::new(config).unwrap().with_retry(fast_retry());
    let err = client
        .post(DtpEndpoint::Notification, &feedback())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Transport {
                connect_failed: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stalled_answer_times_out_and_only_a_get_is_asked_again() {
    let sim = primero_sim().await;
    let ids = seed(&sim, 1);
    let mut config = primero_config(sim.base_url(), false);
    config.timeout = Duration::from_millis(300);
    let client = PrimeroClient::new(config).unwrap();

    sim.inject_fault(
        "GET",
        "/api/v2/cases/",
        Fault::Delay(Duration::from_secs(2)),
        1,
    );
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(GET_CASE), 2);

    sim.inject_fault(
        "PATCH",
        "/api/v2/cases/",
        Fault::Delay(Duration::from_secs(2)),
        1,
    );
    let err = client
        .patch_case(&ids[0], &obj(json!({"status": "open"})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(sim.request_count("PATCH /api/v2/cases/{id}"), 1);
}

#[tokio::test]
async fn truncated_and_malformed_json_are_protocol_errors_not_retried() {
    let sim = primero_sim().await;
    let ids = seed(&sim, 1);
    let client = primero(&sim);
    sim.inject_fault("GET", "/api/v2/cases/", Fault::Truncate, 1);
    let err = client.get_case(&ids[0]).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Protocol { reason, .. } if reason.contains("truncated")),
        "{err:?}"
    );
    sim.inject_fault(
        "GET",
        "/api/v2/cases",
        Fault::Body {
            status: 200,
            body: "{\"data\": [}".into(),
        },
        1,
    );
    let err = client.list_cases(&CaseQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Protocol { reason, .. } if reason.contains("malformed")),
        "{err:?}"
    );
    assert_eq!(sim.request_count(GET_CASE), 1);
    assert_eq!(sim.request_count(LIST_CASES), 1);
}

#[tokio::test]
async fn primero_paging_faults_repeat_and_skip_rows() {
    let sim = primero_sim().await;
    // One second each: cases sharing a second have no stable order.
    let start: chrono::DateTime<chrono::Utc> = "2031-01-01T00:00:00Z".parse().unwrap();
    for i in 0..6 {
        sim.pin_clock(Some(start + chrono::Duration::seconds(i)));
        seed(&sim, 1);
    }
    let client = primero(&sim);
    let ids = |page: &[bridge_partners::primero::Case]| -> Vec<String> {
        page.iter().map(|c| c.id.clone()).collect()
    };

    let mut pager = client.case_pages(CaseQuery::new().per(2));
    let page1 = pager.next_page().await.unwrap().unwrap();
    sim.inject_fault("GET", "/api/v2/cases", Fault::RepeatPage, 1);
    let page2 = pager.next_page().await.unwrap().unwrap();
    assert_eq!(page2.page, 2);
    assert_eq!(ids(&page2.data), ids(&page1.data), "page 1 served again");

    let mut pager = client.case_pages(CaseQuery::new().per(2));
    pager.next_page().await.unwrap().unwrap();
    sim.inject_fault("GET", "/api/v2/cases", Fault::SkipRows(1), 1);
    let page2 = pager.next_page().await.unwrap().unwrap();
    assert_eq!(page2.data.len(), 1, "a row left out");
    assert_eq!(page2.total, 6);
}

#[tokio::test]
async fn a_noop_patch_answers_200_and_changes_nothing() {
    let sim = primero_sim().await;
    let mut people = PeopleGenerator::new(62);
    let service = obj(json!({"service_type": "legal_support"}));
    let case_id = sim.seed_person(&people.person(), vec![service]);
    let sid = sim.case(&case_id).unwrap()["services_section"][0]["unique_id"]
        .as_str()
        .unwrap()
        .to_string();
    let referral = sim
        .add_referral(
            &case_id,
            NewSimReferral {
                transitioned_to: sim.api_user(),
                service_record_id: Some(sid),
                consent_overridden: Some(true),
                ..NewSimReferral::default()
            },
        )
        .unwrap();
    let client = primero(&sim);

    sim.inject_fault("PATCH", "/api/v2/cases/", Fault::NoopWrite, 1);
    let answered = client
        .patch_referral(
            &case_id,
            &referral.id,
            &ReferralUpdate::new(ReferralStatus::Accepted),
        )
        .await
        .unwrap();
    // The caller sees the decision was not applied by comparing statuses.
    assert_eq!(answered.status, ReferralStatus::InProgress);
    assert_eq!(
        sim.referrals(&case_id)[0].status,
        bridge_sim::primero::ReferralStatus::InProgress
    );

    let before = sim.case(&case_id).unwrap();
    sim.inject_fault("PATCH", "/api/v2/cases/", Fault::NoopWrite, 1);
    let echoed = client
        .patch_case(&case_id, &obj(json!({"status": "closed"})))
        .await
        .unwrap();
    assert_eq!(echoed.id, case_id);
    assert_eq!(sim.case(&case_id).unwrap(), before);
}

#[tokio::test]
async fn a_token_expiring_mid_run_costs_one_login() {
    let sim = primero_sim().await;
    // Tokens exist up to Primero v2.10.
    sim.set_version(SimPrimeroVersion::V2_10);
    let ids = seed(&sim, 1);
    let client = PrimeroClient::new(primero_config(sim.base_url(), true)).unwrap();
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(TOKENS), 1);
    sim.inject_fault("GET", "/api/v2/cases/", Fault::ExpireTokens, 1);
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(TOKENS), 2);
    assert_eq!(sim.request_count(GET_CASE), 3);
}

#[tokio::test]
async fn a_failing_login_is_retried_then_the_call_goes_through() {
    let sim = primero_sim().await;
    // Tokens exist up to Primero v2.10.
    sim.set_version(SimPrimeroVersion::V2_10);
    let ids = seed(&sim, 1);
    let client = PrimeroClient::new(primero_config(sim.base_url(), true)).unwrap();
    sim.fail_next("POST", "/api/v2/tokens", 503, 2);
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(TOKENS), 3);
    assert_eq!(sim.request_count(GET_CASE), 1);
}

#[tokio::test]
async fn the_write_hook_runs_after_the_write_before_the_answer() {
    let sim = primero_sim().await;
    let client = primero(&sim);
    let seen: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let (log, handle) = (seen.clone(), sim.sim().clone());
    sim.set_write_hook(Arc::new(move |method: &str, path: &str| {
        log.lock()
            .unwrap()
            .push((method.to_string(), path.to_string(), handle.case_count()));
    }));
    let case = client.create_case(&new_case()).await.unwrap();
    client
        .patch_case(&case.id, &obj(json!({"status": "open"})))
        .await
        .unwrap();
    sim.clear_write_hook();
    client.create_case(&new_case()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("POST".to_string(), "/api/v2/cases".to_string(), 1),
            ("PATCH".to_string(), format!("/api/v2/cases/{}", case.id), 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_in_flight_calls_reach_the_partner() {
    let sim = primero_sim().await;
    let ids = seed(&sim, 1);
    sim.set_latency(Duration::from_millis(50));
    let run = |limits: PartnerLimits| {
        let mut config = primero_config(sim.base_url(), false);
        config.limits = limits;
        let client = PrimeroClient::new(config).unwrap();
        let id = ids[0].clone();
        async move {
            let calls = (0..10).map(|_| client.get_case(&id));
            for r in futures::future::join_all(calls).await {
                r.unwrap();
            }
        }
    };
    run(PartnerLimits {
        max_in_flight: 2,
        rate_per_sec: None,
    })
    .await;
    let limited = sim.max_in_flight_seen();
    eprintln!("Primero, max_in_flight 2: {limited} in flight at the simulator");
    assert!((1..=2).contains(&limited), "{limited} in flight");
    assert_eq!(sim.request_count(GET_CASE), 10);

    // Control: without the limit the same calls do overlap more.
    sim.reset_in_flight();
    run(PartnerLimits::default()).await;
    eprintln!(
        "Primero, default limits: {} in flight at the simulator",
        sim.max_in_flight_seen()
    );
    assert!(sim.max_in_flight_seen() > 2, "{}", sim.max_in_flight_seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_calls_at_the_partner() {
    let sim = primero_sim().await;
    let ids = seed(&sim, 1);
    let mut config = primero_config(sim.base_url(), false);
    config.limits = PartnerLimits {
        max_in_flight: 8,
        rate_per_sec: Some(20.0),
    };
    let client = PrimeroClient::new(config).unwrap();
    sim.reset_in_flight();
    let calls = (0..10).map(|_| client.get_case(&ids[0]));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let at = sim.arrival_times();
    assert_eq!(at.len(), 10);
    // Starts are ≥ 50 ms apart at the client; arrivals carry some loopback
    // and scheduling jitter (a few ms measured), so check half the interval
    // per gap and most of the whole span. Without the limit both are ~0.
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(25),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    let gaps: Vec<_> = at.windows(2).map(|p| p[1] - p[0]).collect();
    eprintln!(
        "Primero, 20 calls/s: 10 calls over {:?}, smallest gap {:?}",
        at[9] - at[0],
        gaps.iter().min().unwrap()
    );
    assert!(at[9] - at[0] >= Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_a_stale_token_share_one_login() {
    let sim = primero_sim().await;
    // Tokens exist up to Primero v2.10.
    sim.set_version(SimPrimeroVersion::V2_10);
    let ids = seed(&sim, 1);
    sim.set_latency(Duration::from_millis(20));
    let client = PrimeroClient::new(primero_config(sim.base_url(), true)).unwrap();
    let calls = (0..10).map(|_| client.get_case(&ids[0]));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(sim.request_count(TOKENS), 1);
    // Revoked under their feet: each refused call waits for one new login.
    sim.revoke_all_tokens();
    let calls = (0..10).map(|_| client.get_case(&ids[0]));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(sim.request_count(TOKENS), 2);
}

// ---- PING ------------------------------------------------------------------

fn ping_config(sim: &RunningPingSim) -> PingConfig {
    let c = sim.config();
    PingConfig {
        base_url: sim.base_url(),
        token_url: sim.token_url(),
        username: c.username.clone(),
        password: c.password.clone(),
        client_id: c.client_id.clone(),
        scope: DEFAULT_SCOPE.to_string(),
        subscription_key: c.subscription_key.clone(),
        partner_id: c.partner_id.clone(),
        interop_id: c.interop_id.clone(),
        timeout: Duration::from_secs(5),
    }
}

async fn ping_setup(page_size: usize, interventions: u64) -> (RunningPingSim, PingClient) {
    let sim = PingSim::start(
        PingSimConfig {
            page_size,
            ..PingSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut people = PeopleGenerator::new(63);
    for n in 1..=interventions {
        sim.add_intervention(SimIntervention::for_person(people.person(), n));
    }
    let client = PingClient::new(ping_config(&sim))
        .unwrap()
        .with_retry(fast_retry());
    (sim, client)
}

fn ingest_path(sim: &RunningPingSim) -> String {
    format!("/api/ingestion/v2/{}/data", sim.config().partner_id)
}

fn transfer_record() -> IngestionRecord {
    IngestionRecord {
        external_id: "ext-1".into(),
        attachments: None,
        fields: vec![Field::new("progres_primerotransferstatus", "125080001")],
    }
}

#[tokio::test]
async fn ping_retrieve_is_retried_and_ingestion_only_when_safe() {
    let (sim, client) = ping_setup(10, 2).await;
    sim.fail_next(RETRIEVE_PATH, 502, 2);
    assert_eq!(client.retrieve("SHP-2747", &[]).await.unwrap().len(), 2);
    assert_eq!(sim.request_count(RETRIEVE_PATH), 3);

    let path = ingest_path(&sim);
    sim.fail_next(&path, 500, 1);
    let err = client
        .ingest("SHP-2748", &[transfer_record()])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(sim.request_count(&path), 1);

    sim.inject_fault(&path, PingFault::Hangup, 1);
    let err = client
        .ingest("SHP-2748", &[transfer_record()])
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Transport { .. }), "{err:?}");
    assert_eq!(sim.request_count(&path), 2);

    sim.inject_fault(
        &path,
        PingFault::Status {
            status: 429,
            retry_after: None,
        },
        1,
    );
    client.ingest("SHP-2748", &[transfer_record()]).await.ok();
    assert_eq!(sim.request_count(&path), 4, "429 is safe to repeat");
}

#[tokio::test]
async fn ping_token_service_failures_are_retried_once_per_login() {
    let (sim, client) = ping_setup(10, 1).await;
    sim.fail_next(TOKEN_PATH, 503, 2);
    client.retrieve("SHP-2747", &[]).await.unwrap();
    assert_eq!(sim.request_count(TOKEN_PATH), 3);
    assert_eq!(sim.tokens_issued(), 1);

    sim.inject_fault(RETRIEVE_PATH, PingFault::ExpireTokens, 1);
    client.retrieve("SHP-2747", &[]).await.unwrap();
    assert_eq!(sim.tokens_issued(), 2);
    assert_eq!(sim.status_count(RETRIEVE_PATH, 401), 1);
}

#[tokio::test]
async fn ping_bodies_cut_malformed_or_empty() {
    let (sim, client) = ping_setup(10, 2).await;
    sim.inject_fault(RETRIEVE_PATH, PingFault::Truncate, 1);
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Protocol { .. }), "{err:?}");
    sim.inject_fault(
        RETRIEVE_PATH,
        PingFault::Body {
            status: 200,
            body: "{\"Data\": [1, }".into(),
        },
        1,
    );
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Protocol { .. }), "{err:?}");
    sim.inject_fault(RETRIEVE_PATH, PingFault::NoData, 1);
    assert!(client.retrieve("SHP-2747", &[]).await.unwrap().is_empty());
    assert_eq!(client.retrieve("SHP-2747", &[]).await.unwrap().len(), 2);
    // A stall past the timeout on a retrieve: asked again.
    let mut config = ping_config(&sim);
    config.timeout = Duration::from_millis(300);
    let slow = PingClient::new(config).unwrap().with_retry(fast_retry());
    sim.inject_fault(RETRIEVE_PATH, PingFault::Delay(Duration::from_secs(2)), 1);
    assert_eq!(slow.retrieve("SHP-2747", &[]).await.unwrap().len(), 2);
}

#[tokio::test]
async fn ping_paging_faults_repeat_and_skip() {
    let (sim, client) = ping_setup(2, 5).await;
    let mut pager = client.pages("SHP-2747", &[]);
    assert_eq!(pager.next_page().await.unwrap().unwrap().len(), 2);
    sim.inject_fault(RETRIEVE_PATH, PingFault::RepeatPage, 1);
    let err = pager.next_page().await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Protocol { reason, .. } if reason.contains("does not advance")),
        "{err:?}"
    );
    assert_eq!(pager.next_page().await.unwrap(), None, "the pager stops");

    let mut pager = client.pages("SHP-2747", &[]);
    let mut sizes = vec![pager.next_page().await.unwrap().unwrap().len()];
    sim.inject_fault(RETRIEVE_PATH, PingFault::SkipRows(1), 1);
    while let Some(page) = pager.next_page().await.unwrap() {
        sizes.push(page.len());
    }
    assert_eq!(sizes, vec![2, 1, 1], "one row never seen");
}

#[tokio::test]
async fn ping_check_status_shapes() {
    let (sim, client) = ping_setup(10, 0).await;
    let record = AsyncIngestionRecord {
        external_id: "7c6b5a49-eeee-4fff-8aaa-0000000000d9".into(),
        external_guid: "1d2e3f40-dddd-4eee-8fff-0000000000c9".into(),
        fields: vec![Field::new(
            "progres_offlineid",
            "7c6b5a49-eeee-4fff-8aaa-0000000000d9",
        )],
    };
    let txn = client
        .ingest_async("SHP-2731", &[record])
        .await
        .unwrap()
        .unwrap();
    for shape in [
        StatusShape::Example19,
        StatusShape::WellFormed,
        StatusShape::BareArray,
        StatusShape::UnescapedTwice,
    ] {
        sim.inject_fault(CHECK_STATUS_PATH, PingFault::CheckStatus(shape.clone()), 1);
        let statuses = client.check_status("SHP-2731", &txn).await.unwrap();
        assert_eq!(statuses.len(), 1, "{shape:?}");
        assert_eq!(
            statuses[0].status.as_deref(),
            Some("Processed"),
            "{shape:?}"
        );
        let data = statuses[0].data.as_ref().expect("inner data parsed");
        assert!(
            data["progres_interoperabilityreferralid"].is_string(),
            "{shape:?}"
        );
    }
    sim.inject_fault(
        CHECK_STATUS_PATH,
        PingFault::CheckStatus(StatusShape::NoData),
        1,
    );
    assert!(client
        .check_status("SHP-2731", &txn)
        .await
        .unwrap()
        .is_empty());
    for shape in [
        StatusShape::ErrorMessage("Transaction not found".into()),
        StatusShape::Garbage,
    ] {
        sim.inject_fault(CHECK_STATUS_PATH, PingFault::CheckStatus(shape.clone()), 1);
        let err = client.check_status("SHP-2731", &txn).await.unwrap_err();
        assert!(
            matches!(err, ConnectorError::Protocol { .. }),
            "{shape:?}: {err:?}"
        );
    }
    // Check status is a question: a 500 is asked again.
    sim.fail_next(CHECK_STATUS_PATH, 500, 1);
    assert_eq!(
        client.check_status("SHP-2731", &txn).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_concurrency_limit_and_one_login() {
    let (sim, client) = ping_setup(10, 1).await;
    let client = client.with_limits(PartnerLimits {
        max_in_flight: 2,
        rate_per_sec: None,
    });
    sim.set_latency(Duration::from_millis(50));
    let calls = (0..10).map(|_| client.retrieve("SHP-2747", &[]));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().len(), 1);
    }
    assert!(
        sim.max_in_flight_seen() <= 2,
        "{}",
        sim.max_in_flight_seen()
    );
    assert_eq!(sim.tokens_issued(), 1, "one login for ten concurrent calls");
}

// ---- DTP -------------------------------------------------------------------

fn dtp_config(pki: &TestPki, sim: &RunningDtpSim) -> DtpConfig {
    DtpConfig {
        urls: {
            // The simulator spells its endpoints for itself; the client gets
            // the same URLs in its own type.
            let urls = sim.urls();
            bridge_partners::dtp::DtpUrls {
                receive_incoming_referral: urls.receive_incoming_referral,
                receive_decision_outgoing_referral: urls.receive_decision_outgoing_referral,
                notification: urls.notification,
            }
        },
        subscription_key: sim.config().subscription_key.clone(),
        client_cert_pem: pki.client_cert_pem.clone().into_bytes(),
        client_key_pem: pki.client_key_pem.clone().into_bytes(),
        extra_root_pem: Some(pki.ca_cert_pem.clone().into_bytes()),
        timeout: Duration::from_secs(5),
    }
}

fn feedback() -> Value {
    json!({"request_type": "Feedback", "status": "Delivered"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_posts_are_retried_only_when_surely_not_processed() {
    let pki = TestPki::generate();
    let sim = DtpSim::start_loopback(DtpSimConfig::new(&pki))
        .await
        .unwrap();
    let client = DtpClient::new(dtp_config(&pki, &sim))
        .unwrap()
        .with_retry(fast_retry());
    let path = sim
        .config()
        .path(bridge_sim::dtp::DtpEndpoint::Notification);

    sim.fail_next(&path, 503, 1);
    client
        .post(DtpEndpoint::Notification, &feedback())
        .await
        .unwrap();
    assert_eq!(sim.requests().len(), 2);
    assert_eq!(sim.received().len(), 1);

    sim.clear_received();
    sim.fail_next(&path, 500, 1);
    let err = client
        .post(DtpEndpoint::Notification, &feedback())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(sim.requests().len(), 1);

    sim.clear_received();
    sim.inject_fault(&path, DtpFault::HangupAfter, 1);
    let err = client
        .post(DtpEndpoint::Notification, &feedback())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Transport { .. }), "{err:?}");
    assert_eq!(
        sim.received().len(),
        1,
        "processed, but the client was not told"
    );

    sim.clear_received();
    sim.inject_fault(
        &path,
        DtpFault::Status {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    let started = Instant::now();
    client
        .post(DtpEndpoint::Notification, &feedback())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(sim.received().len(), 1);

    let mut config = dtp_config(&pki, &sim);
    config.timeout = Duration::from_millis(300);
    let slow = DtpClient::new(config).unwrap().with_retry(fast_retry());
    sim.clear_received();
    sim.inject_fault(&path, DtpFault::Delay(Duration::from_secs(2)), 1);
    let err = slow
        .post(DtpEndpoint::Notification, &feedback())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        sim.requests().len(),
        0,
        "the stalled request was not answered yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_concurrency_limit() {
    let pki = TestPki::generate();
    let sim = DtpSim::start_loopback(DtpSimConfig::new(&pki))
        .await
        .unwrap();
    sim.set_latency(Duration::from_millis(50));
    let client = DtpClient::new(dtp_config(&pki, &sim))
        .unwrap()
        .with_limits(PartnerLimits {
            max_in_flight: 2,
            rate_per_sec: None,
        });
    let body = feedback();
    let calls = (0..10).map(|_| client.post(DtpEndpoint::Notification, &body));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(sim.received().len(), 10);
    assert!(
        sim.max_in_flight_seen() <= 2,
        "{}",
        sim.max_in_flight_seen()
    );
}

//! Primero connector against the in-memory simulator over 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use bridge_partners::primero::{
    CaseOrderBy, CaseQuery, NewReferral, PrimeroAuth, PrimeroClient, PrimeroConfig, ReferralStatus,
    ReferralUpdate, SortOrder,
};
use bridge_partners::{ConnectorError, RetryPolicy, System};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::primero::{
    Fault, FaultRule, NewSimReferral, PrimeroSim, PrimeroSimConfig, RunningPrimeroSim,
    SimPrimeroVersion, SimUser,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

const USER: &str = "bridge_api";
const PASSWORD: &str = "pw-Zq81-not-real";
const TOKENS: &str = "POST /api/v2/tokens";
const LIST_CASES: &str = "GET /api/v2/cases";

/// Primero v2.11+ (the simulator's default): no tokens.
fn sim_config() -> PrimeroSimConfig {
    PrimeroSimConfig {
        user_name: USER.to_string(),
        password: PASSWORD.to_string(),
        ..PrimeroSimConfig::default()
    }
}

/// Primero v2.10 and older: JWT tokens from the login.
fn v2_10_config() -> PrimeroSimConfig {
    PrimeroSimConfig {
        version: SimPrimeroVersion::V2_10,
        ..sim_config()
    }
}

async fn start(config: PrimeroSimConfig) -> RunningPrimeroSim {
    PrimeroSim::new(config)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

fn client_with(sim: &RunningPrimeroSim, auth: PrimeroAuth, lifetime: Duration) -> PrimeroClient {
    let mut config = PrimeroConfig::new(sim.base_url(), auth);
    config.timeout = Duration::from_secs(5);
    config.token_lifetime = lifetime;
    // These tests look at single answers; retry is covered by partner_faults.rs.
    config.retry = RetryPolicy::none();
    PrimeroClient::new(config).expect("valid config")
}

fn token_auth(password: &str) -> PrimeroAuth {
    PrimeroAuth::V210Token {
        user_name: USER.to_string(),
        password: password.to_string(),
    }
}

fn basic_auth(password: &str) -> PrimeroAuth {
    PrimeroAuth::Basic {
        user_name: USER.to_string(),
        password: password.to_string(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn seed(sim: &PrimeroSim, n: usize, seed: u64) -> Vec<String> {
    let mut people = PeopleGenerator::new(seed);
    (0..n)
        .map(|_| sim.seed_person(&people.person(), Vec::new()))
        .collect()
}

fn ts(case: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(case["last_updated_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn basic_and_v2_10_token_login_both_read_cases() {
    let sim = start(v2_10_config()).await;
    let ids = seed(&sim, 3, 1);

    let basic = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    let cases = basic.list_cases(&CaseQuery::new()).await.unwrap();
    assert_eq!(cases.len(), 3);
    assert_eq!(sim.request_count(TOKENS), 0, "Basic never logs in");

    let token = client_with(&sim, token_auth(PASSWORD), Duration::from_secs(3600));
    let case = token.get_case(&ids[1]).await.unwrap();
    assert_eq!(case.id, ids[1]);
    token.list_cases(&CaseQuery::new()).await.unwrap();
    assert_eq!(
        sim.request_count(TOKENS),
        1,
        "one login reused for two calls"
    );
}

#[tokio::test]
async fn concurrent_calls_share_one_login() {
    let sim = start(v2_10_config()).await;
    seed(&sim, 2, 2);
    let client = client_with(&sim, token_auth(PASSWORD), Duration::from_secs(3600));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.list_cases(&CaseQuery::new()).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().len(), 2);
    }
    assert_eq!(sim.request_count(TOKENS), 1);
}

#[tokio::test]
async fn bad_password_is_auth_error_without_the_password() {
    let sim = start(v2_10_config()).await;
    let wrong = "Wr0ng-Passw0rd-xyz";

    let token = client_with(&sim, token_auth(wrong), Duration::from_secs(3600));
    let err = token.list_cases(&CaseQuery::new()).await.unwrap_err();
    match &err {
        ConnectorError::Auth {
            system, endpoint, ..
        } => {
            assert_eq!(*system, System::Primero);
            assert_eq!(endpoint, TOKENS);
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    let text = format!("{err} {err:?}");
    assert!(!text.contains(wrong), "{text}");
    assert!(text.contains("Invalid User name or password."), "{text}");
    assert!(!err.is_transient());
    assert_eq!(sim.request_count(LIST_CASES), 0);

    let basic = client_with(&sim, basic_auth(wrong), Duration::from_secs(3600));
    let err = basic.list_cases(&CaseQuery::new()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(wrong), "{text}");
    assert_eq!(sim.request_count(LIST_CASES), 1, "Basic 401 is not retried");
}

#[tokio::test]
async fn v2_11_login_is_an_auth_error_that_says_to_use_basic() {
    // v2.11+ answers the login with a session cookie and no token.
    let sim = start(sim_config()).await;
    seed(&sim, 1, 9);
    let client = client_with(&sim, token_auth(PASSWORD), Duration::from_secs(3600));
    let err = client.list_cases(&CaseQuery::new()).await.unwrap_err();
    match &err {
        ConnectorError::Auth {
            endpoint, reason, ..
        } => {
            assert_eq!(endpoint, TOKENS);
            assert!(reason.contains("v2.11"), "{reason}");
            assert!(reason.contains(r#"auth = "basic""#), "{reason}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!format!("{err:?}").contains(PASSWORD));
    assert_eq!(sim.request_count(TOKENS), 1, "not retried");
    assert_eq!(sim.request_count(LIST_CASES), 0);
    // Basic works on the same Primero.
    let basic = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    assert_eq!(basic.list_cases(&CaseQuery::new()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn expired_token_relogs_once_and_retries() {
    let sim = start(v2_10_config()).await;
    let ids = seed(&sim, 1, 3);
    let client = client_with(&sim, token_auth(PASSWORD), Duration::from_secs(3600));
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(TOKENS), 1);

    // Primero forgot the token (a restart with a new secret): only the 401 says so.
    sim.revoke_all_tokens();
    let case = client.get_case(&ids[0]).await.unwrap();
    assert_eq!(case.id, ids[0]);
    assert_eq!(sim.request_count(TOKENS), 2, "exactly one re-login");
    assert_eq!(
        sim.request_count("GET /api/v2/cases/{id}"),
        3,
        "first call, refused call, retried call"
    );
}

#[tokio::test]
async fn repeated_401_after_relogin_is_auth_error() {
    let sim = start(v2_10_config()).await;
    let ids = seed(&sim, 1, 4);
    let client = client_with(&sim, token_auth(PASSWORD), Duration::from_secs(3600));
    client.get_case(&ids[0]).await.unwrap();
    sim.fail_next("GET", "/api/v2/cases/", 401, 2);
    let err = client.get_case(&ids[0]).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth { .. }), "{err:?}");
    assert_eq!(sim.request_count(TOKENS), 2, "re-login once, not in a loop");
    assert_eq!(sim.request_count("GET /api/v2/cases/{id}"), 3);
}

#[tokio::test]
async fn token_is_refreshed_before_its_jwt_expires() {
    let sim = start(PrimeroSimConfig {
        token_ttl: Duration::from_secs(1),
        ..v2_10_config()
    })
    .await;
    let ids = seed(&sim, 1, 5);
    // The JWT says 1 s (`exp` − `iat`), whatever the client was configured
    // with → refresh 100 ms before, i.e. after 900 ms.
    let client = client_with(&sim, token_auth(PASSWORD), Duration::from_secs(3600));
    client.get_case(&ids[0]).await.unwrap();
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(TOKENS), 1, "still fresh");
    tokio::time::sleep(Duration::from_millis(950)).await;
    client.get_case(&ids[0]).await.unwrap();
    assert_eq!(sim.request_count(TOKENS), 2, "proactive re-login");
    assert_eq!(
        sim.request_count("GET /api/v2/cases/{id}"),
        3,
        "no call was refused"
    );
}

#[tokio::test]
async fn paging_past_the_cap_returns_every_case_once() {
    // The simulator would serve 5000 per page here, so three calls prove the
    // client clamped `per` to 1000 itself.
    let sim = start(PrimeroSimConfig {
        max_per: 5000,
        ..sim_config()
    })
    .await;
    let mut people = PeopleGenerator::new(6);
    // One second each: ties have no order in Primero, and this test is
    // about the page size (ties: case_scan's tests).
    let start_at: DateTime<Utc> = "2031-01-01T00:00:00Z".parse().unwrap();
    let seeded: HashSet<String> = (0..2345)
        .map(|i| {
            sim.pin_clock(Some(start_at + chrono::Duration::seconds(i)));
            sim.seed_person(&people.person(), Vec::new())
        })
        .collect();
    sim.pin_clock(None);
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    let query = CaseQuery::new()
        .per(5000)
        .order_by(CaseOrderBy::LastUpdatedAt, SortOrder::Asc);
    let cases = client.list_cases(&query).await.unwrap();
    assert_eq!(cases.len(), 2345);
    let got: HashSet<String> = cases.iter().map(|c| c.id.clone()).collect();
    assert_eq!(got, seeded, "every case exactly once");
    assert_eq!(sim.request_count(LIST_CASES), 3, "1000 + 1000 + 345");
    let stamps: Vec<_> = cases.iter().map(|c| c.last_updated_at.unwrap()).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "ascending order kept"
    );

    // The streaming form yields the same pages one at a time.
    let mut pager = client.case_pages(query);
    let mut sizes = Vec::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        assert_eq!(page.total, 2345);
        sizes.push(page.data.len());
    }
    assert_eq!(sizes, vec![1000, 1000, 345]);
}

#[tokio::test]
async fn filters_by_individual_case_id_and_update_range() {
    let sim = start(sim_config()).await;
    let mut people = PeopleGenerator::new(7);
    let persons: Vec<_> = (0..10).map(|_| people.person()).collect();
    // One second each: the range test needs distinct whole-second stamps.
    let start_at: DateTime<Utc> = "2031-02-01T00:00:00Z".parse().unwrap();
    let ids: Vec<String> = persons
        .iter()
        .enumerate()
        .map(|(i, p)| {
            sim.pin_clock(Some(start_at + chrono::Duration::seconds(i as i64)));
            sim.seed_person(p, Vec::new())
        })
        .collect();
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));

    let hits = client
        .list_cases(&CaseQuery::new().unhcr_individual_no(&persons[4].progres_id))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, ids[4]);
    assert_eq!(
        hits[0].unhcr_individual_no.as_deref(),
        Some(persons[4].progres_id.as_str())
    );
    assert_eq!(hits[0].extra["name_first"], json!(persons[4].given_name));

    let case_id = sim.case(&ids[7]).unwrap()["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let hits = client
        .list_cases(&CaseQuery::new().case_id(&case_id))
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|c| &c.id).collect::<Vec<_>>(),
        vec![&ids[7]]
    );

    let all = sim.cases();
    let (from, to) = (ts(&all[3]), ts(&all[6]));
    let mut hits: Vec<String> = client
        .list_cases(&CaseQuery::new().updated_since(from).updated_until(to))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    hits.sort();
    let mut expected = ids[3..=6].to_vec();
    expected.sort();
    assert_eq!(hits, expected, "range is inclusive on both ends");

    let open_ended = client
        .list_cases(&CaseQuery::new().updated_since(ts(&all[8])))
        .await
        .unwrap();
    assert_eq!(open_ended.len(), 2);

    let none = client
        .list_cases(&CaseQuery::new().unhcr_individual_no("803-999999999"))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn create_and_patch_merge_services() {
    let sim = start(sim_config()).await;
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    let body = obj(json!({
        "unhcr_individual_no": "803-100009999",
        "module_id": "primeromodule-cp",
        "owned_by": "progresv4_primero_intake",
        "services_section": [{
            "service_type": "alternative_care",
            "service_implementing_agency": "UNICEF",
            "unhcr_referral_status": "pending",
            "progres_interventionnumber": "803-24-PRTITV-1000123"
        }]
    }));
    let created = client.create_case(&body).await.unwrap();
    assert!(!created.id.is_empty());
    assert_eq!(
        created.owned_by.as_deref(),
        Some("progresv4_primero_intake")
    );
    let case_id = created.case_id.clone().unwrap();
    assert_eq!(
        created.extra["short_id"],
        json!(case_id[case_id.len() - 7..])
    );
    assert_eq!(created.services_section.len(), 1);
    let uid = created.services_section[0].unique_id.clone().unwrap();
    let created_at = created.last_updated_at.unwrap();

    let patch = obj(json!({
        "services_section": [
            {"unique_id": uid, "unhcr_referral_status": "rejected",
             "unhcr_referral_rejection_reason": "no capacity"},
            {"service_type": "legal_support", "service_implementing_agency": "UNHCR"}
        ]
    }));
    let echoed = client.patch_case(&created.id, &patch).await.unwrap();
    assert_eq!(echoed.id, created.id);
    // Whole seconds: the patch may share the create's second.
    assert!(echoed.last_updated_at.unwrap() >= created_at);

    let case = client.get_case(&created.id).await.unwrap();
    assert_eq!(case.services_section.len(), 2, "one updated, one appended");
    let first = &case.services_section[0];
    assert_eq!(first.unique_id.as_deref(), Some(uid.as_str()));
    assert_eq!(first.unhcr_referral_status.as_deref(), Some("rejected"));
    assert_eq!(
        first.service_type.as_deref(),
        Some("alternative_care"),
        "fields not sent are kept"
    );
    let second = &case.services_section[1];
    assert_eq!(second.service_type.as_deref(), Some("legal_support"));
    let second_uid = second.unique_id.clone().unwrap();
    assert_ne!(second_uid, uid);

    // `_delete` is no Primero key: dropped unread, nothing removed.
    let not_delete = obj(json!({"services_section": [{"unique_id": uid, "_delete": true}]}));
    client.patch_case(&created.id, &not_delete).await.unwrap();
    let case = client.get_case(&created.id).await.unwrap();
    assert_eq!(case.services_section.len(), 2);
    assert!(!case.services_section[0].extra.contains_key("_delete"));

    let delete = obj(json!({"services_section": [{"unique_id": uid, "_destroy": true}]}));
    client.patch_case(&created.id, &delete).await.unwrap();
    let case = client.get_case(&created.id).await.unwrap();
    assert_eq!(case.services_section.len(), 1);
    assert_eq!(
        case.services_section[0].unique_id.as_deref(),
        Some(second_uid.as_str())
    );

    // A client-chosen id: Primero answers 204, the client reads the case back.
    let own_id = "0f0e0d0c-1111-4222-8333-444455556666";
    let mine = client
        .create_case(&obj(json!({"id": own_id, "unhcr_individual_no": "803-1"})))
        .await
        .unwrap();
    assert_eq!(mine.id, own_id);
    let dup = client
        .create_case(&obj(json!({"id": own_id})))
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409));
}

#[tokio::test]
async fn referral_state_machine_through_the_client() {
    let sim = start(sim_config()).await;
    let mut people = PeopleGenerator::new(8);
    let service =
        obj(json!({"service_type": "legal_support", "service_implementing_agency": "UNHCR"}));
    let case_id = sim.seed_person(&people.person(), vec![service.clone(), service]);
    let services = sim.case(&case_id).unwrap()["services_section"].clone();
    let (s1, s2) = (
        services[0]["unique_id"].as_str().unwrap().to_string(),
        services[1]["unique_id"].as_str().unwrap().to_string(),
    );
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));

    // As the caseworker would: one through the client, one directly.
    let r1 = client
        .create_referral(
            &case_id,
            &NewReferral {
                transitioned_to: "unhcr_cw".into(),
                transitioned_to_agency: Some("UNHCR".into()),
                service_record_id: Some(s1.clone()),
                ..NewReferral::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r1.status, ReferralStatus::InProgress);
    let r2 = sim
        .add_referral(
            &case_id,
            NewSimReferral {
                transitioned_to: "unhcr_cw2".into(),
                service_record_id: Some(s2.clone()),
                ..NewSimReferral::default()
            },
        )
        .unwrap();
    let case = client.get_case(&case_id).await.unwrap();
    assert_eq!(
        case.services_section[0].extra["service_status_referred"],
        json!(true)
    );
    assert_eq!(
        case.extra["assigned_user_names"],
        json!(["unhcr_cw", "unhcr_cw2"])
    );

    let listed = client.list_referrals(&case_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].service_record_id.as_deref(), Some(s1.as_str()));
    assert_eq!(listed[0].record_id.as_deref(), Some(case_id.as_str()));

    // in_progress → accepted
    let accepted = client
        .patch_referral(
            &case_id,
            &r1.id,
            &ReferralUpdate::new(ReferralStatus::Accepted),
        )
        .await
        .unwrap();
    assert_eq!(accepted.status, ReferralStatus::Accepted);
    assert!(accepted.extra.contains_key("responded_at"));

    // accepted → rejected: silent no-op, 200 with the referral unchanged.
    let late = client
        .patch_referral(
            &case_id,
            &r1.id,
            &ReferralUpdate {
                status: ReferralStatus::Rejected,
                rejected_reason: Some("late".into()),
                rejection_note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(late.status, ReferralStatus::Accepted);
    assert_eq!(late.rejected_reason, None);

    // accepted → done, with the provider's note on the service.
    let done = client
        .patch_referral(
            &case_id,
            &r1.id,
            &ReferralUpdate {
                status: ReferralStatus::Done,
                rejected_reason: None,
                rejection_note: Some("documents issued".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, ReferralStatus::Done);

    // in_progress → rejected removes the recipient from the assigned users.
    let rejected = client
        .patch_referral(
            &case_id,
            &r2.id,
            &ReferralUpdate {
                status: ReferralStatus::Rejected,
                rejected_reason: Some("not_match".into()),
                rejection_note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rejected.status, ReferralStatus::Rejected);
    assert_eq!(rejected.rejected_reason.as_deref(), Some("not_match"));

    let case = client.get_case(&case_id).await.unwrap();
    let first = &case.services_section[0];
    assert_eq!(first.extra["service_implemented"], json!("implemented"));
    assert_eq!(
        first.extra["note_on_referral_from_provider"],
        json!("documents issued")
    );
    assert_eq!(case.extra["assigned_user_names"], json!(["unhcr_cw"]));

    let missing = client
        .patch_referral(
            &case_id,
            "no-such-referral",
            &ReferralUpdate::new(ReferralStatus::Accepted),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));
}

#[tokio::test]
async fn users_follow_pages_as_primero_reports_them() {
    // A server cap below ours: the client must page by the `per` it is given back.
    let sim = start(PrimeroSimConfig {
        max_per: 50,
        ..sim_config()
    })
    .await;
    for i in 0..123 {
        let mut user = SimUser::new(format!("cw_{i:03}"));
        user.position = Some("Caseworker".into());
        user.email = Some(format!("cw{i}@example.org"));
        sim.add_user(user);
    }
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    let users = client.list_users().await.unwrap();
    assert_eq!(users.len(), 124, "123 caseworkers and the API user");
    let names: HashSet<&str> = users.iter().map(|u| u.user_name.as_str()).collect();
    assert_eq!(names.len(), 124);
    assert!(names.contains(USER) && names.contains("cw_122"));
    let cw = users.iter().find(|u| u.user_name == "cw_007").unwrap();
    assert_eq!(cw.position.as_deref(), Some("Caseworker"));
    assert_eq!(cw.email.as_deref(), Some("cw7@example.org"));
    assert_eq!(sim.request_count("GET /api/v2/users"), 3);
}

#[tokio::test]
async fn injected_503_is_transient_with_retry_after() {
    let sim = start(sim_config()).await;
    seed(&sim, 1, 9);
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    sim.add_fault(FaultRule {
        method: Some("GET".into()),
        path_prefix: "/api/v2/cases".into(),
        fault: Fault::Status {
            status: 503,
            retry_after: Some(7),
        },
        remaining: 1,
    });
    let err = client.list_cases(&CaseQuery::new()).await.unwrap_err();
    match &err {
        ConnectorError::Status {
            system,
            endpoint,
            status,
            retry_after,
            reason,
        } => {
            assert_eq!(*system, System::Primero);
            assert_eq!(endpoint, LIST_CASES);
            assert_eq!(*status, 503);
            assert_eq!(*retry_after, Some(7));
            assert_eq!(reason, "Service Unavailable");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.is_transient());
    // The fault was for one request only.
    assert_eq!(client.list_cases(&CaseQuery::new()).await.unwrap().len(), 1);

    sim.fail_next("PATCH", "/api/v2/cases/", 503, 1);
    let err = client
        .patch_case("any-id", &obj(json!({"status": "open"})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(
        err.to_string().contains("PATCH /api/v2/cases/{id}"),
        "{err}"
    );
}

#[tokio::test]
async fn errors_name_the_template_never_the_query_or_body() {
    let sim = start(sim_config()).await;
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));

    let err = client
        .get_case("6f0c7a10-aaaa-4bbb-8ccc-0000000000a1")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_transient());
    assert!(text.contains("Primero"), "{text}");
    assert!(text.contains("GET /api/v2/cases/{id}"), "{text}");
    assert!(text.contains("404"), "{text}");
    assert!(!text.contains("6f0c7a10"), "{text}");

    let individual = "803-100004242";
    sim.fail_next("GET", "/api/v2/cases", 404, 1);
    let err = client
        .list_cases(&CaseQuery::new().unhcr_individual_no(individual))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert_eq!(err.status(), Some(404));
    assert!(text.contains("GET /api/v2/cases"), "{text}");
    assert!(!text.contains(individual), "{text}");
    assert!(!text.contains('?'), "{text}");

    // A 2xx the client cannot read is a protocol error that quotes nothing.
    sim.add_fault(FaultRule {
        method: None,
        path_prefix: "/api/v2/cases".into(),
        fault: Fault::Body {
            status: 200,
            body: r#"{"data": {"name_first": "Shaizoulen", "services_section": "#.into(),
        },
        remaining: 1,
    });
    let err = client
        .get_case("6f0c7a10-aaaa-4bbb-8ccc-0000000000a1")
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Protocol { .. }), "{err:?}");
    assert!(!err.to_string().contains("Shaizoulen"), "{err}");
}

#[tokio::test]
async fn validation_error_carries_primero_message() {
    let sim = start(sim_config()).await;
    let client = client_with(&sim, basic_auth(PASSWORD), Duration::from_secs(3600));
    let err = client
        .create_case(&obj(json!({"date_of_birth": "15/03/2012"})))
        .await
        .unwrap_err();
    match err {
        ConnectorError::Status { status, reason, .. } => {
            // ErrorService: "Invalid Record JSON" and the JSON pointers.
            assert_eq!(status, 422);
            assert_eq!(reason, "Invalid Record JSON (detail: /date_of_birth)");
        }
        other => panic!("expected Status, got {other:?}"),
    }
}

#[tokio::test]
async fn timeout_is_a_transient_transport_error() {
    let sim = start(sim_config()).await;
    let mut config = PrimeroConfig::new(sim.base_url(), basic_auth(PASSWORD));
    config.timeout = Duration::from_millis(200);
    config.retry = RetryPolicy::none();
    let client = PrimeroClient::new(config).unwrap();
    sim.add_fault(FaultRule {
        method: None,
        path_prefix: "/api/v2/users".into(),
        fault: Fault::Delay(Duration::from_secs(2)),
        remaining: 1,
    });
    let err = client.list_users().await.unwrap_err();
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
    assert!(err.is_transient());
}

//! HTTP tests of the Primero simulator, and helpers the unit tests share.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::*;
use crate::people::PeopleGenerator;

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

pub(super) fn services(case: &Value) -> Vec<Value> {
    case["services_section"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn http_role_knobs_and_validations() {
    let running = PrimeroSim::default()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut people = PeopleGenerator::new(11);
    let (a, b) = (people.person(), people.person());
    let case_a = running.seed_person(&a, Vec::new());
    running.seed_person(&b, Vec::new());
    let http = reqwest::Client::new();
    let base = running.base_url();
    let get = |path: String| {
        let http = http.clone();
        async move {
            http.get(path)
                .basic_auth("bridge_api", Some("sim-password"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let by_no = format!("{base}/api/v2/cases?unhcr_individual_no={}", a.progres_id);
    assert_eq!(get(by_no.clone()).await["metadata"]["total"], 1);

    // Unreadable: the filter is dropped and the field not shown.
    running.set_role(SimRole::bridge().without_read("unhcr_individual_no"));
    let all = get(by_no.clone()).await;
    assert_eq!(all["metadata"]["total"], 2);
    assert!(all["data"][0].get("unhcr_individual_no").is_none());
    running.set_role(SimRole::default());

    // Unwritable: stripped silently, 200.
    running
        .set_role(SimRole::bridge().without_write("services_section.progres_interventionnumber"));
    let answer = http
        .patch(format!("{base}/api/v2/cases/{case_a}"))
        .basic_auth("bridge_api", Some("sim-password"))
        .json(&json!({"data": {"services_section": [
            {"service_type": "legal_support", "progres_interventionnumber": "803-24-PRTITV-1"}
        ]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let service = &services(&running.case(&case_a).unwrap())[0];
    assert_eq!(service["service_type"], "legal_support");
    assert!(service.get("progres_interventionnumber").is_none());
    running.set_role(SimRole::default());

    // Validations: upper-case id, a value outside a lookup.
    let refused = http
        .post(format!("{base}/api/v2/cases"))
        .basic_auth("bridge_api", Some("sim-password"))
        .json(&json!({"data": {
            "id": "3E2D1C0B-BBBB-4CCC-9DDD-0000000000B2",
            "sex": "intersex_x",
            "services_section": [{"unique_id": "svc-1"}]
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"errors": [{
            "status": 422,
            "resource": "/api/v2/cases",
            "message": "Invalid Record JSON",
            "detail": ["/id", "/sex", "/services_section/0/unique_id"]
        }]})
    );
    assert_eq!(running.case_count(), 2);

    // A search error is an empty 200; `remote` changes nothing.
    let failed = get(format!(
        "{base}/api/v2/cases?last_updated_at=2024-01-01..soon"
    ))
    .await;
    assert_eq!(failed["metadata"]["total"], 0);
    let remote = get(format!("{base}/api/v2/cases?remote=true")).await;
    assert_eq!(remote["metadata"]["total"], 2);

    // Referrals to others are hidden from a role without that view.
    let referral = running
        .add_referral(
            &case_a,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                ..NewSimReferral::default()
            },
        )
        .unwrap();
    running
        .update_case(&case_a, obj(json!({"owned_by": "cp_worker"})))
        .unwrap();
    let listed = format!("{base}/api/v2/cases/{case_a}/referrals");
    assert_eq!(
        get(listed.clone()).await["data"][0]["id"],
        json!(referral.id)
    );
    running.set_role(SimRole::bridge().without_others_referrals());
    assert_eq!(get(listed).await["data"], json!([]));

    // Users by user_name, exact.
    running.add_user(SimUser::new("unhcr_cw"));
    running.add_user(SimUser::new("unhcr_cw2"));
    let one = get(format!("{base}/api/v2/users?user_name=unhcr_cw")).await;
    assert_eq!(one["metadata"]["total"], 1);
    assert_eq!(one["data"][0]["user_name"], "unhcr_cw");
    running.shutdown().await;
}

#[tokio::test]
async fn http_auth_paging_and_counters() {
    let running = PrimeroSim::new(PrimeroSimConfig {
        max_per: 3,
        ..PrimeroSimConfig::default()
    })
    .start("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    for _ in 0..7 {
        running.insert_case(Map::new()).unwrap();
    }
    let http = reqwest::Client::new();
    let url = format!(
        "{}/api/v2/cases?per=50&page=3&order=asc",
        running.base_url()
    );
    let unauthenticated = http.get(&url).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let body: Value = http
        .get(&url)
        .basic_auth("bridge_api", Some("sim-password"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["metadata"], json!({"total": 7, "per": 3, "page": 3}));
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let login = http
        .post(format!("{}/api/v2/tokens", running.base_url()))
        .json(&json!({"user": {"user_name": "bridge_api", "password": "wrong"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);
    assert_eq!(
        login.json::<Value>().await.unwrap(),
        json!({"error": "Invalid User name or password."})
    );
    let missing = http
        .get(format!("{}/api/v2/cases/nope", running.base_url()))
        .basic_auth("bridge_api", Some("sim-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"errors": [{"status": 404, "resource": "/api/v2/cases/nope", "message": "Not Found"}]})
    );
    assert_eq!(running.request_count("GET /api/v2/cases"), 2);
    assert_eq!(running.request_count("POST /api/v2/tokens"), 1);
    assert_eq!(running.request_count("GET /api/v2/cases/{id}"), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn errors_are_in_primero_shape() {
    let running = PrimeroSim::default()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(format!("{}/api/v2/cases", running.base_url()))
            .basic_auth("bridge_api", Some("sim-password"))
            .json(&body)
            .send()
    };
    let invalid = post(
        json!({"data": {"date_of_birth": "15/03/2012", "services_section": [{"_destroy": "yes"}]}}),
    )
    .await
    .unwrap();
    assert_eq!(invalid.status(), 422);
    assert_eq!(
        invalid.json::<Value>().await.unwrap(),
        json!({"errors": [{
            "status": 422,
            "resource": "/api/v2/cases",
            "detail": ["/date_of_birth", "/services_section/0/_destroy"],
            "message": "Invalid Record JSON"
        }]})
    );
    let missing = post(json!({"nodata": {}})).await.unwrap();
    assert_eq!(
        missing.json::<Value>().await.unwrap()["errors"][0]["message"],
        "param is missing or the value is empty: data"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn ties_on_last_updated_at_come_in_varying_order() {
    let sim = PrimeroSim::default();
    sim.pin_clock(Some(
        DateTime::parse_from_rfc3339("2031-05-05T05:05:05.555Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    for _ in 0..30 {
        sim.insert_case(Map::new()).unwrap();
    }
    let running = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = reqwest::Client::new();
    let mut orders = HashSet::new();
    for _ in 0..5 {
        // The bound is compared at whole seconds: .999 still matches .000.
        let body: Value = http
                .get(format!(
                    "{}/api/v2/cases?order_by=last_updated_at&order=asc&per=100&last_updated_at=2031-05-05T05:05:05.999Z..",
                    running.base_url()
                ))
                .basic_auth("bridge_api", Some("sim-password"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let ids: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 30);
        orders.insert(ids);
    }
    assert!(orders.len() > 1, "ties must not have a stable order");
    running.shutdown().await;
}

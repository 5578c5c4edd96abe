//! HTTP tests of the PING simulator: tokens, auth, retrieve paging,
//! ingestion, faults.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::people::PeopleGenerator;

async fn started(config: PingSimConfig) -> (RunningPingSim, reqwest::Client, String) {
    let sim = PingSim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let config = sim.config().clone();
    let form = [
        ("username", config.username.as_str()),
        ("password", config.password.as_str()),
        ("grant_type", "password"),
        ("scope", "s"),
        ("client_id", config.client_id.as_str()),
        ("response_type", "token"),
    ];
    let token: Value = http
        .post(sim.token_url())
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    (sim, http, token)
}

async fn post(
    sim: &RunningPingSim,
    http: &reqwest::Client,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let response = http
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .header("Ocp-Apim-Subscription-Key", "sim-subscription-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn retrieve_body(shp: &str, record_id: Option<&str>) -> Value {
    let params: Vec<Value> = record_id
        .map(|id| json!({"ParameterName": "{record_ids}", "Value": id}))
        .into_iter()
        .collect();
    json!({"ShippingProcessId": shp, "PartnerId": "PNR-1363", "InteropID": "INT-1436",
               "APIVersion": "V3", "QueryParameters": params})
}

#[tokio::test]
async fn token_endpoint_checks_credentials() {
    let (sim, http, _) = started(PingSimConfig::default()).await;
    let form = [
        ("username", "bridge-sim@ping.example"),
        ("password", "wrong"),
        ("grant_type", "password"),
        ("scope", "s"),
        ("client_id", "00000000-0000-4000-8000-00000000c11e"),
        ("response_type", "token"),
    ];
    let response = http.post(sim.token_url()).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(sim.tokens_issued(), 1);
}

#[tokio::test]
async fn api_requires_key_and_token() {
    let (sim, http, token) = started(PingSimConfig::default()).await;
    let url = format!("{}{RETRIEVE_PATH}", sim.base_url());
    let body = retrieve_body("SHP-2747", None);
    let no_key = http
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let no_token = http
        .post(&url)
        .header("Ocp-Apim-Subscription-Key", "sim-subscription-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let (status, answer) = post(&sim, &http, &token, RETRIEVE_PATH, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["Data"], NO_DATA);
    assert_eq!(answer["RecordCount"], Value::Null);
    sim.expire_all_tokens();
    let (status, _) = post(&sim, &http, &token, RETRIEVE_PATH, body).await;
    assert_eq!(status, 401);
    assert_eq!(sim.status_count(RETRIEVE_PATH, 401), 3);
}

#[tokio::test]
async fn retrieve_validates_body_and_pages_with_either_cookie_form() {
    let config = PingSimConfig {
        page_size: 2,
        ..PingSimConfig::default()
    };
    let (sim, http, token) = started(config).await;
    let mut people = PeopleGenerator::new(2);
    for n in 1..=3 {
        sim.add_intervention(SimIntervention::for_person(people.person(), n));
    }
    let mut wrong_case = retrieve_body("SHP-2747", None);
    let obj = wrong_case.as_object_mut().unwrap();
    let interop = obj.shift_remove("InteropID").unwrap();
    obj.insert("InteropId".into(), interop);
    let (status, answer) = post(&sim, &http, &token, RETRIEVE_PATH, wrong_case).await;
    assert_eq!(status, 400);
    assert!(answer["ErrorMessage"]
        .as_str()
        .unwrap()
        .contains("InteropId"));

    let (status, answer) = post(
        &sim,
        &http,
        &token,
        RETRIEVE_PATH,
        retrieve_body("SHP-9999", None),
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["ErrorMessage"].is_string());

    let (_, first) = post(
        &sim,
        &http,
        &token,
        RETRIEVE_PATH,
        retrieve_body("SHP-2747", None),
    )
    .await;
    assert_eq!(first["RecordCount"], 2);
    assert_eq!(first["PagingSummary"]["IsMoreRecordsAvailable"], true);
    let cookie = first["PagingSummary"]["PagingCookie"].clone();
    let mut nested = retrieve_body("SHP-2747", None);
    nested["PagingSummary"] = json!({"PagingCookie": cookie, "PageNumber": 1});
    let (_, second) = post(&sim, &http, &token, RETRIEVE_PATH, nested).await;
    assert_eq!(second["RecordCount"], 1);
    assert_eq!(second["PagingSummary"]["IsMoreRecordsAvailable"], false);
    let mut top = retrieve_body("SHP-2747", None);
    top["PagingCookie"] = cookie;
    let (_, again) = post(&sim, &http, &token, RETRIEVE_PATH, top).await;
    assert_eq!(again["Data"], second["Data"]);
    let mut bogus = retrieve_body("SHP-2747", None);
    bogus["PagingCookie"] = json!("<cookie page=\"9\" />");
    let (status, _) = post(&sim, &http, &token, RETRIEVE_PATH, bogus).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sync_ingestion_checks_partner_and_casing() {
    let (sim, http, token) = started(PingSimConfig::default()).await;
    let id = sim.add_intervention(SimIntervention::for_person(
        PeopleGenerator::new(3).person(),
        1,
    ));
    let record = json!({"ExternalId": "id55", "Fields": [
            {"Name": "progres_lpinterventionid", "Value": id},
            {"Name": "progres_primerotransferstatus", "Value": "125080002"},
            {"Name": "progres_primerotransferstatusdate", "Value": "2024-05-03"}]});
    let good =
        json!({"ShippingProcessId": "SHP-2748", "InteropId": "INT-1436", "Data": [record.clone()]});
    let wrong_case =
        json!({"ShippingProcessId": "SHP-2748", "InteropID": "INT-1436", "Data": [record]});
    let (status, _) = post(
        &sim,
        &http,
        &token,
        "/api/ingestion/v2/PNR-1363/data",
        wrong_case,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &sim,
        &http,
        &token,
        "/api/ingestion/v2/PNR-9999/data",
        good.clone(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(sim.ingestion_records().is_empty());
    assert_eq!(sim.pending_intervention_ids(), vec![id.clone()]);
    let (status, answer) = post(&sim, &http, &token, "/api/ingestion/v2/PNR-1363/data", good).await;
    assert_eq!(status, 200);
    assert_eq!(answer["Data"][0]["Status"], "Success");
    assert!(sim.pending_intervention_ids().is_empty());
    let state = sim.intervention_state(&id).unwrap();
    assert_eq!(
        state.transfer_status.as_deref(),
        Some(TRANSFER_STATUS_PENDING)
    );
    assert_eq!(state.transfer_status_date.as_deref(), Some("2024-05-03"));
    assert_eq!(sim.ingestion_records().len(), 1);
    assert_eq!(sim.ingestion_bodies().len(), 3);
    assert!(sim.requeue_intervention(&id));
    assert_eq!(sim.pending_intervention_ids(), vec![id]);
}

#[tokio::test]
async fn faults_and_latency() {
    let (sim, http, token) = started(PingSimConfig::default()).await;
    sim.inject_fault(
        RETRIEVE_PATH,
        FaultKind::Status {
            status: 503,
            retry_after: Some(3),
        },
        1,
    );
    sim.set_latency(Duration::from_millis(50));
    let started_at = Instant::now();
    let response = http
        .post(format!("{}{RETRIEVE_PATH}", sim.base_url()))
        .json(&retrieve_body("SHP-2747", None))
        .send()
        .await
        .unwrap();
    assert!(started_at.elapsed() >= Duration::from_millis(50));
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    let (status, _) = post(
        &sim,
        &http,
        &token,
        RETRIEVE_PATH,
        retrieve_body("SHP-2747", None),
    )
    .await;
    assert_eq!(status, 200);
}

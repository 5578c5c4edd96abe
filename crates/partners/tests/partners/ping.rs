//! PING client against the PING simulator over 127.0.0.1.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bridge_partners::ping::{
    AsyncIngestionRecord, Field, IngestionRecord, PingClient, PingConfig, DEFAULT_SCOPE,
    RETRIEVE_PATH,
};
use bridge_partners::{ConnectorError, RetryPolicy, System};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::{
    FaultKind, PingSim, PingSimConfig, RunningPingSim, SimIntervention, SpecificNeed, TOKEN_PATH,
};
use serde_json::{json, Value};

/// Keys of spec example 14 (SHP-2747), in order.
const EXAMPLE_14_KEYS: [&str; 19] = [
    "progres_statusdate",
    "progres_individual.indiv.progres_sex",
    "progres_individual.progres_sexname",
    "progres_individual.indiv.progres_givenname",
    "progres_individual.indiv.progres_registrationgroupid",
    "progres_individual.progres_registrationgroupidname",
    "progres_lpintervention.int.progres_interventionnumber",
    "statuscode",
    "progres_lpintervention.int.progres_interventionstartdate",
    "progres_dtpdeliveryid",
    "progres_deliverytype",
    "progres_deliverytypename",
    "progres_businessunit",
    "progres_businessunitname",
    "progres_individual.indiv.progres_id",
    "progres_intervention",
    "progres_interventionname",
    "progres_lpinterventionid",
    "progres_lpintervention.int.progres_individual",
];

/// Keys of spec example 15 (SHP-2358), in order.
const EXAMPLE_15_KEYS: [&str; 23] = [
    "progres_interventionnumber",
    "progres_businessunit",
    "progres_interventionstartdate",
    "progres_primerotransferstatusdate",
    "progres_interventiondescription",
    "progres_reasonforreferral",
    "progres_interventiontype2.interventiontype.progres_description",
    "progres_individual.individuals.progres_id",
    "progres_individual.individuals.progres_registrationgroupid",
    "progres_individual.progres_registrationgroupidname",
    "progres_individual.individuals.progres_givenname",
    "progres_individual.individuals.progres_familyname",
    "progres_individual.individuals.progres_dateofbirth",
    "progres_individual.individuals.progres_sex",
    "progres_individual.individuals.progres_primaryphonenumber",
    "systemuser.title",
    "systemuser.su.mobilephone",
    "systemuser.su.internalemailaddress",
    "progres_language.progres_languagecodeidname",
    "progres_specificneed.progres_spncategory2name",
    "progres_specificneed.progres_spnsubcategory2name",
    "progres_specificneed.specificneeds.progres_spncategory2",
    "progres_specificneed.specificneeds.progres_spnsubcategory2",
];

const INGEST_PATH: &str = "/api/ingestion/v2/PNR-1363/data";

async fn start(config: PingSimConfig) -> RunningPingSim {
    PingSim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

fn client_config(sim: &RunningPingSim) -> PingConfig {
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

async fn setup(config: PingSimConfig) -> (RunningPingSim, PingClient) {
    let sim = start(config).await;
    let client = PingClient::new(client_config(&sim)).expect("valid config");
    (sim, client)
}

fn keys(row: &serde_json::Map<String, Value>) -> Vec<&str> {
    row.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn token_is_obtained_once_and_reused() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    for _ in 0..3 {
        assert!(client.retrieve("SHP-2747", &[]).await.unwrap().is_empty());
    }
    assert_eq!(sim.request_count(TOKEN_PATH), 1);
    assert_eq!(sim.request_count(RETRIEVE_PATH), 3);
}

#[tokio::test]
async fn concurrent_calls_share_one_login() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    sim.set_latency(Duration::from_millis(30));
    let client = Arc::new(client);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.retrieve("SHP-2747", &[]).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(sim.request_count(TOKEN_PATH), 1);
    assert_eq!(sim.request_count(RETRIEVE_PATH), 8);
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let config = PingSimConfig {
        token_ttl_secs: 2,
        ..PingSimConfig::default()
    };
    let (sim, client) = setup(config).await;
    client.retrieve("SHP-2747", &[]).await.unwrap();
    // Past expiry: a client that ignores expires_in sends the stale token and gets a 401.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    client.retrieve("SHP-2747", &[]).await.unwrap();
    assert_eq!(sim.request_count(TOKEN_PATH), 2);
    assert_eq!(sim.status_count(RETRIEVE_PATH, 401), 0);
}

#[tokio::test]
async fn early_server_expiry_means_one_relogin() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    client.retrieve("SHP-2747", &[]).await.unwrap();
    sim.expire_all_tokens();
    client.retrieve("SHP-2747", &[]).await.unwrap();
    assert_eq!(sim.request_count(TOKEN_PATH), 2);
    assert_eq!(sim.status_count(RETRIEVE_PATH, 401), 1);
    assert_eq!(sim.status_count(RETRIEVE_PATH, 200), 2);
}

#[tokio::test]
async fn wrong_subscription_key_is_a_401_without_the_key() {
    let sim = start(PingSimConfig::default()).await;
    let config = PingConfig {
        subscription_key: "wrong-subscription-key-42".into(),
        ..client_config(&sim)
    };
    let client = PingClient::new(config).unwrap();
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_transient());
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-subscription-key-42"), "{text}");
    assert!(!text.contains("sim-password"), "{text}");
    assert!(
        text.contains("POST /primes/fetch/paging/v3/retrievedatawithpaging SHP-2747"),
        "{text}"
    );
    // One re-login and one retry, no more.
    assert_eq!(sim.request_count(RETRIEVE_PATH), 2);
    assert_eq!(sim.request_count(TOKEN_PATH), 2);
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let sim = start(PingSimConfig::default()).await;
    let config = PingConfig {
        password: "not-the-password-77".into(),
        ..client_config(&sim)
    };
    let client = PingClient::new(config).unwrap();
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
    match &err {
        ConnectorError::Auth {
            system, endpoint, ..
        } => {
            assert_eq!(*system, System::PingToken);
            assert_eq!(endpoint, "POST /oauth2/v2.0/token");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    let text = format!("{err} {err:?}");
    assert!(!text.contains("not-the-password-77"), "{text}");
    assert!(text.contains("invalid_grant"), "{text}");
    assert_eq!(sim.request_count(RETRIEVE_PATH), 0);
}

#[tokio::test]
async fn pending_deliveries_then_details_four_join_rows() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    let person = PeopleGenerator::new(14).person();
    let id = sim.add_intervention(
        SimIntervention::for_person(person.clone(), 123)
            .with_languages(["Nuer", "Swahili"])
            .with_specific_needs(vec![
                SpecificNeed::unaccompanied_child(),
                SpecificNeed::child_labour(),
            ]),
    );

    let pending = client.retrieve("SHP-2747", &[]).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(keys(&pending[0]), EXAMPLE_14_KEYS);
    assert_eq!(pending[0]["progres_lpinterventionid"], id.as_str());
    assert_eq!(
        pending[0]["progres_individual.indiv.progres_id"],
        person.progres_id.as_str()
    );
    assert_eq!(pending[0]["progres_deliverytype"], 125080004);

    let lp = pending[0]["progres_lpinterventionid"].as_str().unwrap();
    let details = client
        .retrieve("SHP-2358", &[("{record_ids}", lp)])
        .await
        .unwrap();
    assert_eq!(details.len(), 4);
    let mut combinations = HashSet::new();
    for row in &details {
        assert_eq!(keys(row), EXAMPLE_15_KEYS);
        assert_eq!(row["progres_interventionnumber"], "803-24-PRTITV-1000123");
        assert_eq!(
            row["progres_individual.individuals.progres_familyname"],
            person.family_name.as_str()
        );
        combinations.insert((
            row["progres_language.progres_languagecodeidname"].to_string(),
            row["progres_specificneed.progres_spnsubcategory2name"].to_string(),
        ));
    }
    assert_eq!(combinations.len(), 4);
}

#[tokio::test]
async fn paging_returns_every_row_exactly_once() {
    let config = PingSimConfig {
        page_size: 2,
        ..PingSimConfig::default()
    };
    let (sim, client) = setup(config).await;
    let mut people = PeopleGenerator::new(5);
    let seeded: HashSet<String> = (1..=5)
        .map(|n| sim.add_intervention(SimIntervention::for_person(people.person(), n)))
        .collect();

    let rows = client.retrieve("SHP-2747", &[]).await.unwrap();
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["progres_lpinterventionid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), seeded);
    assert_eq!(sim.request_count(RETRIEVE_PATH), 3);

    // The same, a page at a time.
    let mut pager = client.pages("SHP-2747", &[]);
    let mut sizes = Vec::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        sizes.push(page.len());
    }
    assert_eq!(sizes, vec![2, 2, 1]);
}

#[tokio::test]
async fn no_data_available_is_empty() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    assert!(client.retrieve("SHP-2747", &[]).await.unwrap().is_empty());
    let unknown = client
        .retrieve(
            "SHP-2358",
            &[("{record_ids}", "0b7f1c2e-0000-4a4a-9c9c-000000000000")],
        )
        .await
        .unwrap();
    assert!(unknown.is_empty());
    let page = client.retrieve_page("SHP-2747", &[], None).await.unwrap();
    assert!(page.rows.is_empty() && page.next.is_none());
    assert_eq!(page.record_count, None);
    assert_eq!(sim.status_count(RETRIEVE_PATH, 200), 3);
}

#[tokio::test]
async fn unknown_shipping_process_is_an_error_with_the_ping_message() {
    let (_sim, client) = setup(PingSimConfig::default()).await;
    let err = client.retrieve("SHP-0001", &[]).await.unwrap_err();
    match &err {
        ConnectorError::Status {
            system,
            endpoint,
            status,
            reason,
            ..
        } => {
            assert_eq!(*system, System::Ping);
            assert_eq!(
                endpoint,
                "POST /primes/fetch/paging/v3/retrievedatawithpaging SHP-0001"
            );
            assert_eq!(*status, 400);
            assert!(reason.contains("Shipping process"), "{reason}");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn transfer_status_ingestion_has_example_16_shape_and_dequeues() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    let mut people = PeopleGenerator::new(16);
    let id = sim.add_intervention(SimIntervention::for_person(people.person(), 1));
    let other = sim.add_intervention(SimIntervention::for_person(people.person(), 2));
    let business_unit = "577ccdf6-86de-e811-80d8-001dd8b71fe3";

    let record = IngestionRecord {
        external_id: "id55".into(),
        attachments: None,
        fields: vec![
            Field::new("progres_lpinterventionid", id.as_str()),
            Field::new("progres_businessunit", business_unit),
            Field::new("progres_primerotransferstatus", "125080002"),
            Field::new("progres_primerotransferstatusdate", "2024-05-03"),
        ],
    };
    let response = client.ingest("SHP-2748", &[record]).await.unwrap();
    assert!(response.sph_transaction_id.is_some());
    assert!(response.failures().is_empty());

    let expected = json!({
        "ShippingProcessId": "SHP-2748",
        "InteropId": "INT-1436",
        "Data": [{
            "ExternalId": "id55",
            "Fields": [
                {"Name": "progres_lpinterventionid", "Value": id},
                {"Name": "progres_businessunit", "Value": business_unit},
                {"Name": "progres_primerotransferstatus", "Value": "125080002"},
                {"Name": "progres_primerotransferstatusdate", "Value": "2024-05-03"},
            ],
        }],
    });
    let bodies = sim.ingestion_bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0].path, INGEST_PATH);
    // Compared as text so key order and casing count too.
    assert_eq!(bodies[0].body.to_string(), expected.to_string());
    let records = sim.ingestion_records();
    assert_eq!(records[0].attachments, None);

    assert_eq!(sim.transfer_status(&id).as_deref(), Some("125080002"));
    let pending = client.retrieve("SHP-2747", &[]).await.unwrap();
    let pending_ids: Vec<&str> = pending
        .iter()
        .map(|r| r["progres_lpinterventionid"].as_str().unwrap())
        .collect();
    assert_eq!(pending_ids, vec![other.as_str()]);
}

#[tokio::test]
async fn decision_ingestion_reports_unknown_records() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    let id = sim.add_intervention(SimIntervention::for_person(
        PeopleGenerator::new(17).person(),
        1,
    ));
    let decision = |lp: &str, external: &str| IngestionRecord {
        external_id: external.into(),
        attachments: Some(vec![bridge_partners::ping::Attachment {
            comment: "Referral rejected by PRIMERO: No capacity".into(),
        }]),
        fields: vec![
            Field::new("progres_lpinterventionid", lp),
            Field::new("progres_primerotransferstatus", "125080004"),
            Field::new("progres_primeroid", external),
        ],
    };
    let response = client
        .ingest(
            "SHP-2748",
            &[
                decision(&id, "case-a"),
                decision("0b7f1c2e-0000-4a4a-9c9c-000000000000", "case-b"),
            ],
        )
        .await
        .unwrap();
    let failures = response.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].external_id.as_deref(), Some("case-b"));
    let state = sim.intervention_state(&id).unwrap();
    assert_eq!(state.transfer_status.as_deref(), Some("125080004"));
    assert_eq!(state.primero_id.as_deref(), Some("case-a"));
    assert_eq!(
        state.comments,
        vec!["Referral rejected by PRIMERO: No capacity"]
    );
    assert!(sim.ingestion_bodies()[0].body["Data"][0]["Attachments"].is_array());
}

#[tokio::test]
async fn wrong_partner_id_is_rejected() {
    let sim = start(PingSimConfig::default()).await;
    let config = PingConfig {
        partner_id: "PNR-0000".into(),
        ..client_config(&sim)
    };
    let client = PingClient::new(config).unwrap();
    let record = IngestionRecord {
        external_id: "x".into(),
        attachments: Some(vec![]),
        fields: vec![],
    };
    let err = client.ingest("SHP-2748", &[record]).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err
        .to_string()
        .contains("POST /api/ingestion/v2/{PartnerId}/data SHP-2748"));
}

#[tokio::test]
async fn injected_503_is_transient_with_retry_after() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    // A single answer is looked at; retry is covered by partner_faults.rs.
    let client = client.with_retry(RetryPolicy::none());
    sim.inject_fault(
        RETRIEVE_PATH,
        FaultKind::Status {
            status: 503,
            retry_after: Some(7),
        },
        1,
    );
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.status(), Some(503));
    match err {
        ConnectorError::Status { retry_after, .. } => assert_eq!(retry_after, Some(7)),
        other => panic!("expected a status error, got {other:?}"),
    }
    // The fault is spent; the next call goes through.
    client.retrieve("SHP-2747", &[]).await.unwrap();

    sim.fail_next(TOKEN_PATH, 503, 1);
    let fresh = PingClient::new(client_config(&sim))
        .unwrap()
        .with_retry(RetryPolicy::none());
    let err = fresh.retrieve("SHP-2747", &[]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("PING token service"), "{err}");
}

#[tokio::test]
async fn slow_answers_time_out_as_transient() {
    let sim = start(PingSimConfig::default()).await;
    let config = PingConfig {
        timeout: Duration::from_millis(200),
        ..client_config(&sim)
    };
    let client = PingClient::new(config).unwrap();
    client.retrieve("SHP-2747", &[]).await.unwrap();
    sim.set_latency(Duration::from_millis(600));
    let err = client.retrieve("SHP-2747", &[]).await.unwrap_err();
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

#[tokio::test]
async fn async_referral_then_check_status_then_decision_round_trip() {
    let (sim, client) = setup(PingSimConfig::default()).await;
    let record = AsyncIngestionRecord {
        external_id: "7c6b5a49-eeee-4fff-8aaa-0000000000d4".into(),
        external_guid: "1d2e3f40-dddd-4eee-8fff-0000000000c3".into(),
        fields: vec![
            Field::new("progres_offlineid", "7c6b5a49-eeee-4fff-8aaa-0000000000d4"),
            Field::new(
                "progres_orgreferralid",
                "5f4e3d2c-ffff-4aaa-8bbb-abcdef123456",
            ),
            Field::null("progres_otherrequestedservices"),
        ],
    };
    let txn = client
        .ingest_async("SHP-2731", &[record])
        .await
        .unwrap()
        .expect("a transaction id");
    let body = &sim.ingestion_bodies()[0].body;
    assert_eq!(body["InteropID"], "INT-1436");
    assert_eq!(body["APIVersion"], "V2");

    let statuses = client.check_status("SHP-2731", &txn).await.unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].status.as_deref(), Some("Processed"));
    let referral_id = statuses[0].data.as_ref().unwrap()["progres_interoperabilityreferralid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sim.interop_referral(&referral_id).is_some());

    assert!(sim.decide_interop_referral(
        &referral_id,
        125080002,
        Some("Individual Not Match UNHCR ID"),
        Some("ID number belongs to a different individual"),
    ));
    let list = client.retrieve("SHP-2795", &[]).await.unwrap();
    assert_eq!(list[0]["progres_interoperabilityreferralstatus"], 125080002);
    let detail = client
        .retrieve("SHP-2796", &[("{record_ids}", &referral_id)])
        .await
        .unwrap();
    assert_eq!(
        detail[0]["progres_interoperabilityreferralrejectionomment"],
        "ID number belongs to a different individual"
    );
    assert_eq!(
        detail[0]["progres_offlineid"],
        "7c6b5a49-eeee-4fff-8aaa-0000000000d4"
    );

    let synced = IngestionRecord {
        external_id: referral_id.clone(),
        attachments: Some(vec![]),
        fields: vec![
            Field::new("progres_interoperabilityreferralid", referral_id.as_str()),
            Field::new("progres_interoperabilityreferralstatus", "125080003"),
            Field::new(
                "progres_comments",
                "Referral decision synced with PRIMERO via OpenFn",
            ),
        ],
    };
    client.ingest("SHP-2284", &[synced]).await.unwrap();
    assert_eq!(
        sim.interop_referral(&referral_id).unwrap().status,
        125080003
    );

    let err = client
        .check_status("SHP-2731", "no-such-txn")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

//! DTP flow 1-1 (proGres referral → Primero) with its 1-4 success and 1-3
//! `Delivery Fail` notifications: the inbox handler driven directly with
//! messages of the shape of spec example 01, against the Primero simulator
//! and the DTP simulator (mutual TLS) on loopback, with the real job
//! component and the `mappings/ethiopia-gambella` folder. The last test goes
//! through the real `bridge inbox serve` with DTP pushing.

use std::sync::Arc;
use std::time::Duration;

use bridge_demo::round_trip::dtp_client_config;
use bridge_flows::dtp_1_1::{Handler, FLOW as JOB};
use bridge_flows::{RecordOutcome, RunReport};
use bridge_inbox::{HandlerError, InboxHandler, InboxKind, MessageClaim};
use bridge_mappings::MappingSet;
use bridge_partners::dtp::DtpClient;
use bridge_partners::primero::{PrimeroAuth, PrimeroClient, PrimeroConfig};
use bridge_partners::RetryPolicy;
use bridge_runtime::reload::Catalog;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{JobRuntime, RuntimeConfig};
use bridge_sim::dtp::DtpEndpoint;
use bridge_sim::dtp::{DtpSim, DtpSimConfig, RunningDtpSim, TestPki};
use bridge_sim::primero::{PrimeroSim, PrimeroSimConfig, RunningPrimeroSim};
use bridge_store::{SqliteStore, Store};
use bridge_testkit::cli::{sigterm, Streams};
use serde_json::{json, Map, Value};

const TODAY: &str = "2025-06-01";
const INTAKE_USER: &str = "progresv4_primero_intake@cpims-gambella.primero.org";
const COUNTRY: &str = "ethiopia-gambella";

fn project() -> ProjectDirs {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[JOB.to_string()]).expect("jobs build");
    project
}

/// The `closure_reason` the Gambella mapping folder gives a failure class.
fn closure_reason(project: &ProjectDirs, class: &str) -> String {
    let set = MappingSet::load_dir(&project.mappings(COUNTRY)).unwrap();
    set.tables["delivery-fail-reasons"].map[class].clone()
}

struct Harness {
    project: ProjectDirs,
    primero: RunningPrimeroSim,
    dtp: RunningDtpSim,
    pki: TestPki,
    primero_config: PrimeroSimConfig,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
}

impl Harness {
    async fn start() -> Self {
        let project = project();
        let primero_config = PrimeroSimConfig::default();
        let primero = PrimeroSim::new(primero_config.clone())
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let pki = TestPki::generate();
        let dtp = DtpSim::start_loopback(DtpSimConfig::new(&pki))
            .await
            .unwrap();
        let runtime = Arc::new(JobRuntime::new(RuntimeConfig::default()).unwrap());
        // Only this flow's job: the folder is Gambella's, and other jobs may
        // need tables of other deployments.
        let catalog = Arc::new(
            Catalog::open(
                runtime,
                &[project.job_wasm(JOB)],
                &project.mappings(COUNTRY),
            )
            .await
            .unwrap(),
        );
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        Self {
            project,
            primero,
            dtp,
            pki,
            primero_config,
            catalog,
            store,
        }
    }

    fn dtp_client(&self) -> DtpClient {
        DtpClient::new(dtp_client_config(&self.pki, &self.dtp))
            .unwrap()
            // These tests drive the message's attempts themselves.
            .with_retry(RetryPolicy::none())
    }

    fn primero_client(&self) -> PrimeroClient {
        let mut config = PrimeroConfig::new(
            self.primero.base_url(),
            PrimeroAuth::Basic {
                user_name: self.primero_config.user_name.clone(),
                password: self.primero_config.password.clone(),
            },
        );
        config.timeout = Duration::from_secs(10);
        config.retry = RetryPolicy::none();
        PrimeroClient::new(config).unwrap()
    }

    fn handler(&self) -> Handler {
        Handler::from_parts(
            self.primero_client(),
            self.dtp_client(),
            self.catalog.clone(),
            self.store.clone(),
        )
    }

    fn notifications(&self) -> Vec<Value> {
        self.dtp.sim().bodies(DtpEndpoint::Notification)
    }

    /// Cases carrying this UNHCR individual id.
    fn cases_of(&self, individual: &str) -> Vec<Value> {
        self.primero
            .sim()
            .find_by_individual_no(individual)
            .iter()
            .map(|id| self.primero.sim().case(id).unwrap())
            .collect()
    }

    fn reason(&self, class: &str) -> String {
        closure_reason(&self.project, class)
    }
}

async fn handle(
    handler: &Handler,
    receipt: &str,
    message: &Value,
) -> Result<RunReport, HandlerError> {
    handler
        .handle(
            InboxKind::PrimeroOutgoingReferral,
            receipt,
            message,
            TODAY,
            &MessageClaim::unclaimed(),
        )
        .await
}

/// One intervention row of the shape of spec example 01 (invented values).
fn row(number: &str, individual: &str) -> Map<String, Value> {
    let lookup = |id: &str, logical: &str, name: &str| json!({"Id": id, "KeyAttributes": [], "LogicalName": logical, "Name": name, "RowVersion": null});
    let v = json!({
        "progres_interventionnumber": number,
        "progres_lpinterventionid": "0b7f1c2e-1111-4a4a-9c9c-000000000001",
        "progres_businessunit": "577ccdf6-86de-e811-80d8-001dd8b71fe3",
        "progres_interventionstartdate": "2024-05-02T00:00:00Z",
        "progres_interventiondescription": "<p>Child needs interim care arrangement</p>",
        "progres_reasonforreferral": "Caregiver hospitalised",
        "interventiontype.progres_description": "Alternative Care",
        "user.title": "Protection Assistant",
        "user.internalemailaddress": "pa.example@unhcr.example",
        "user.mobilephone": "+251900000001",
        "individuals.progres_id": individual,
        "individuals.progres_registrationgroupid": lookup("0b7f1c2e-4444-4a4a-9c9c-000000000004", "progres_registrationgroup", "803-24-1009999"),
        "individuals.progres_givenname": "Nyakuoth",
        "individuals.progres_middlename": "Q",
        "individuals.progres_familyname": "Zzyzxample",
        "individuals.progres_commonyusedname": "Nyak",
        "individuals.progres_dateofbirth": "2012-03-15T00:00:00Z",
        "individuals.progres_sex": "125080000",
        "individuals.progres_primaryphonenumber": "+251977123456",
        "individuals.progres_coalocationlevel1": lookup("0b7f1c2e-5555-4a4a-9c9c-000000000005", "progres_locationlevel", "Gambella"),
        "languages.progres_languagecodeid": lookup("0b7f1c2e-7777-4a4a-9c9c-000000000007", "progres_languagecode", "Nuer"),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn message(rows: Vec<Map<String, Value>>) -> Value {
    json!({"interventions": rows, "request_type": "PrimeroOutgoingReferral"})
}

fn service_numbers(case: &Value) -> Vec<String> {
    case["services_section"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["progres_interventionnumber"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn success(case: &Value, owner: &str, number: &str) -> Value {
    json!({
        "status": "Pending Acknowledgement",
        "primero_user": owner,
        "case_id": case["case_id"],
        "progres_interventionnumber": number,
    })
}

fn delivery_fail(number: &str, reason: &str) -> Value {
    json!({
        "progres_interventionnumber": number,
        "status": "Delivery Fail",
        "closure_reason": reason,
        "request_type": "Feedback",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn created_appended_and_a_resent_intervention_is_not_duplicated() {
    let h = Harness::start().await;
    let handler = h.handler();
    let person = "803-100001001";

    // New individual → a case owned by the intake user, one service.
    let report = handle(
        &handler,
        "r-1",
        &message(vec![row("803-24-PRTITV-1000301", person)]),
    )
    .await
    .unwrap();
    assert_eq!(report.count("created"), 1, "{report}");
    let cases = h.cases_of(person);
    assert_eq!(cases.len(), 1);
    let case = &cases[0];
    assert_eq!(case["owned_by"], INTAKE_USER);
    assert_eq!(case["module_id"], "primeromodule-cp");
    assert_eq!(service_numbers(case), ["803-24-PRTITV-1000301"]);
    assert_eq!(
        h.notifications(),
        [success(case, INTAKE_USER, "803-24-PRTITV-1000301")]
    );

    // A caseworker takes the case over and corrects the name in Primero.
    let record_id = case["id"].as_str().unwrap().to_string();
    let edit = json!({"owned_by": "cw_gambella_1", "name_first": "Corrected"});
    h.primero
        .sim()
        .update_case(&record_id, edit.as_object().unwrap().clone())
        .unwrap();

    // A second intervention for the same individual → appended; the
    // caseworker's owner and name stay (only the service is sent).
    let report = handle(
        &handler,
        "r-2",
        &message(vec![row("803-24-PRTITV-1000302", person)]),
    )
    .await
    .unwrap();
    assert_eq!(report.count("updated"), 1, "{report}");
    let case = h.primero.sim().case(&record_id).unwrap();
    assert_eq!(
        service_numbers(&case),
        ["803-24-PRTITV-1000301", "803-24-PRTITV-1000302"]
    );
    assert_eq!(case["owned_by"], "cw_gambella_1");
    assert_eq!(case["name_first"], "Corrected");
    assert_eq!(
        h.notifications()[1],
        success(&case, "cw_gambella_1", "803-24-PRTITV-1000302")
    );

    // DTP re-sends the first intervention, here five times: the original
    // appended a copy and notified each time; here the service is
    // recognised and DTP, told once already, is not told again.
    for n in 3..8 {
        let report = handle(
            &handler,
            &format!("r-{n}"),
            &message(vec![row("803-24-PRTITV-1000301", person)]),
        )
        .await
        .unwrap();
        assert_eq!(report.count("already present"), 1, "{report}");
    }
    let case = h.primero.sim().case(&record_id).unwrap();
    assert_eq!(
        service_numbers(&case),
        ["803-24-PRTITV-1000301", "803-24-PRTITV-1000302"]
    );
    assert_eq!(h.cases_of(person).len(), 1);
    assert_eq!(h.notifications().len(), 2, "{:#?}", h.notifications());
}

/// The replica's claim on the message is lost after the first case is
/// written (it was suspended past its claim; another replica claims the
/// message): the handler writes nothing more to Primero or DTP and says
/// the message is left to the other replica, which finds the first case
/// there and tells DTP (nothing lost, nothing written twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_claim_stops_the_message_before_the_next_partner_write() {
    let h = Harness::start().await;
    let handler = h.handler();
    h.store
        .inbox_put("r-claim", "PrimeroOutgoingReferral", "k", b"sealed")
        .await
        .unwrap();
    let claimed = h
        .store
        .inbox_claim("replica-a", Duration::from_secs(60), 1)
        .await
        .unwrap();
    let claim = MessageClaim::new(
        claimed[0].fence.clone(),
        std::time::Instant::now() + Duration::from_secs(60),
    );
    let lose = claim.clone();
    h.primero
        .sim()
        .set_write_hook(Arc::new(move |_, _| lose.holding().declare_lost()));
    let people = ["803-100003001", "803-100003002", "803-100003003"];
    let rows = people
        .iter()
        .enumerate()
        .map(|(i, p)| row(&format!("803-24-PRTITV-100040{i}"), p))
        .collect();
    let got = handler
        .handle(
            InboxKind::PrimeroOutgoingReferral,
            "r-claim",
            &message(rows),
            TODAY,
            &claim,
        )
        .await;
    assert!(matches!(got, Err(HandlerError::ClaimLost(_))), "{got:?}");
    let cases: Vec<usize> = people.iter().map(|p| h.cases_of(p).len()).collect();
    assert_eq!(cases, [1, 0, 0], "only the first case was written");
    assert!(h.notifications().is_empty(), "{:#?}", h.notifications());

    // The replica holding the message now (here unclaimed) finishes it.
    h.primero.sim().clear_write_hook();
    let rows = people
        .iter()
        .enumerate()
        .map(|(i, p)| row(&format!("803-24-PRTITV-100040{i}"), p))
        .collect();
    let report = handle(&handler, "r-claim", &message(rows)).await.unwrap();
    assert_eq!(
        (report.count("already present"), report.count("created")),
        (1, 2),
        "{report}"
    );
    let cases: Vec<usize> = people.iter().map(|p| h.cases_of(p).len()).collect();
    assert_eq!(cases, [1, 1, 1]);
    assert_eq!(h.notifications().len(), 3);
}

/// DTP sends one row per language of an intervention (the shape of
/// OpenFn/primero-progres `sampleData/flow1__progresReferralToUNICEF.json`):
/// one service with both languages, one notification.
#[tokio::test(flavor = "multi_thread")]
async fn one_row_per_language_gives_one_service_and_one_notification() {
    let h = Harness::start().await;
    let handler = h.handler();
    let text = include_str!("fixtures/samples/dtp-1-1_one-row-per-language.json");
    let message: Value = serde_json::from_str(text).unwrap();
    let report = handle(&handler, "r-lang", &message).await.unwrap();
    assert_eq!(report.records.len(), 1, "{report}");
    assert_eq!(report.count("created"), 1, "{report}");
    let cases = h.cases_of("803-100001091");
    assert_eq!(cases.len(), 1);
    assert_eq!(service_numbers(&cases[0]), ["803-24-PRTITV-1000391"]);
    assert_eq!(cases[0]["language"], json!(["language2", "language6"]));
    assert_eq!(
        h.notifications(),
        [success(&cases[0], INTAKE_USER, "803-24-PRTITV-1000391")]
    );
}

/// A referral for a child whose case is closed reopens the case and flags
/// it for its owner, keeping the caseworker's data; the report says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_referral_for_a_closed_case_reopens_and_flags_it() {
    let h = Harness::start().await;
    let handler = h.handler();
    let person = "803-100001092";
    handle(
        &handler,
        "r-c1",
        &message(vec![row("803-24-PRTITV-1000392", person)]),
    )
    .await
    .unwrap();
    let record_id = h.cases_of(person)[0]["id"].as_str().unwrap().to_string();
    let edit = json!({"owned_by": "cw_gambella_2", "name_first": "Corrected", "status": "closed"});
    h.primero
        .sim()
        .update_case(&record_id, edit.as_object().unwrap().clone())
        .unwrap();

    let report = handle(
        &handler,
        "r-c2",
        &message(vec![row("803-24-PRTITV-1000393", person)]),
    )
    .await
    .unwrap();
    assert_eq!(report.count("updated"), 1, "{report}");
    let case = h.primero.sim().case(&record_id).unwrap();
    assert_eq!(case["status"], "open");
    assert_eq!(case["case_status_reopened"], true);
    assert_eq!(case["workflow"], "reopened");
    assert_eq!(case["reopened_logs"].as_array().unwrap().len(), 1);
    assert_eq!(case["owned_by"], "cw_gambella_2");
    assert_eq!(case["name_first"], "Corrected");
    assert_eq!(
        service_numbers(&case),
        ["803-24-PRTITV-1000392", "803-24-PRTITV-1000393"]
    );
    let flags = h.primero.sim().flags(&record_id);
    assert_eq!(flags.len(), 1);
    assert!(flags[0].message.contains("803-24-PRTITV-1000393"));
    assert_eq!(flags[0].date, TODAY);
    assert_eq!(case["flagged"], true);
    let notes = serde_json::to_value(&report.notes).unwrap();
    assert_eq!(
        notes,
        json!([{
            "source_id": "803-24-PRTITV-1000393",
            "level": "info",
            "note": "closed-case",
            "case_id": record_id,
            "reopened": true,
            "flag_id": flags[0].id.to_string(),
        }])
    );
    assert_eq!(
        h.notifications()[1],
        success(&case, "cw_gambella_2", "803-24-PRTITV-1000393")
    );

    // Re-sent: already present, no second flag.
    let again = handle(
        &handler,
        "r-c3",
        &message(vec![row("803-24-PRTITV-1000393", person)]),
    )
    .await
    .unwrap();
    assert_eq!(again.count("already present"), 1, "{again}");
    assert!(again.notes.is_empty());
    assert_eq!(h.primero.sim().flags(&record_id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_matching_cases_hold_the_record_and_dtp_is_told() {
    let h = Harness::start().await;
    let person = "803-100001002";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut data = Map::new();
        data.insert("unhcr_individual_no".into(), json!(person));
        data.insert("module_id".into(), json!("primeromodule-cp"));
        ids.push(h.primero.sim().insert_case(data).unwrap());
    }
    let report = handle(
        &h.handler(),
        "r-1",
        &message(vec![row("803-24-PRTITV-1000303", person)]),
    )
    .await
    .unwrap();
    match &report.records[0].outcome {
        RecordOutcome::Held { reason, candidates } => {
            assert_eq!(reason, "ambiguous-match");
            let mut got = candidates.clone();
            got.sort();
            ids.sort();
            assert_eq!(got, ids);
        }
        other => panic!("expected held, got {other:?}"),
    }
    // Nothing written to either case (the original wrote to the first).
    for id in &ids {
        assert!(service_numbers(&h.primero.sim().case(id).unwrap()).is_empty());
    }
    assert_eq!(h.primero.sim().case_count(), 2);
    assert_eq!(
        h.notifications(),
        [delivery_fail(
            "803-24-PRTITV-1000303",
            &h.reason("ambiguous-match")
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_date_of_birth_is_a_delivery_fail_with_the_missing_fields_reason() {
    let h = Harness::start().await;
    let mut r = row("803-24-PRTITV-1000304", "803-100001003");
    // The original only threw for the first five fields; a missing date of
    // birth surfaced later as a TypeError ("invalid data").
    r.remove("individuals.progres_dateofbirth");
    let report = handle(&h.handler(), "r-1", &message(vec![r]))
        .await
        .unwrap();
    match &report.records[0].outcome {
        RecordOutcome::Failed { code, reason } => {
            assert_eq!(code, "missing-fields");
            assert!(
                reason.contains("individuals.progres_dateofbirth"),
                "{reason}"
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(report.records[0].acknowledged);
    assert_eq!(h.primero.sim().case_count(), 0);
    assert_eq!(
        h.notifications(),
        [delivery_fail(
            "803-24-PRTITV-1000304",
            &h.reason("missing-fields")
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unaccepted_service_type_is_answered_as_in_example_05() {
    let h = Harness::start().await;
    let mut r = row("803-24-PRTITV-1000124", "803-100001004");
    r.insert(
        "interventiontype.progres_description".into(),
        json!("BID / BIA conducted"),
    );
    let report = handle(&h.handler(), "r-1", &message(vec![r]))
        .await
        .unwrap();
    assert_eq!(report.count("failed"), 1, "{report}");
    assert_eq!(h.primero.sim().case_count(), 0);
    // Byte for byte the body of spec example 05.
    let example_05 = r#"{"progres_interventionnumber":"803-24-PRTITV-1000124","status":"Delivery Fail","closure_reason":"Intervention type value shared is not one of the 4 accepted interagency referral service types. Please see the mapping specifications.","request_type":"Feedback"}"#;
    let got = h.notifications();
    assert_eq!(got.len(), 1);
    assert_eq!(serde_json::to_string(&got[0]).unwrap(), example_05);
}

#[tokio::test(flavor = "multi_thread")]
async fn primero_503_is_retryable_without_a_notification_then_delivered() {
    let h = Harness::start().await;
    let handler = h.handler();
    let msg = message(vec![row("803-24-PRTITV-1000305", "803-100001005")]);
    h.primero.sim().fail_next("GET", "/api/v2/cases", 503, 1);
    match handle(&handler, "r-1", &msg).await {
        Err(HandlerError::Retryable(reason)) => {
            assert!(reason.contains("503"), "{reason}");
            assert!(reason.contains("attempt 1 of 5"), "{reason}");
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    // The original sent nothing here either, but never retried.
    assert!(h.notifications().is_empty());
    assert_eq!(h.primero.sim().case_count(), 0);

    // The inbox tries the message again: delivered and answered once.
    let report = handle(&handler, "r-1", &msg).await.unwrap();
    assert_eq!(report.count("created"), 1, "{report}");
    let case = &h.cases_of("803-100001005")[0];
    assert_eq!(
        h.notifications(),
        [success(case, INTAKE_USER, "803-24-PRTITV-1000305")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn primero_unavailable_on_every_attempt_is_finally_a_delivery_fail() {
    let h = Harness::start().await;
    let handler = h.handler().with_max_attempts(2);
    let msg = message(vec![row("803-24-PRTITV-1000306", "803-100001006")]);
    h.primero.sim().fail_next("GET", "/api/v2/cases", 503, 2);
    assert!(matches!(
        handle(&handler, "r-1", &msg).await,
        Err(HandlerError::Retryable(_))
    ));
    assert!(h.notifications().is_empty());
    // Last attempt: DTP is told, the message is done.
    let report = handle(&handler, "r-1", &msg).await.unwrap();
    assert_eq!(report.count("failed"), 1, "{report}");
    assert_eq!(
        h.notifications(),
        [delivery_fail(
            "803-24-PRTITV-1000306",
            &h.reason("partner-unavailable")
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn primero_refusing_the_case_is_a_delivery_fail_not_silence() {
    let h = Harness::start().await;
    h.primero.sim().fail_next("POST", "/api/v2/cases", 422, 1);
    let report = handle(
        &h.handler(),
        "r-1",
        &message(vec![row("803-24-PRTITV-1000307", "803-100001007")]),
    )
    .await
    .unwrap();
    match &report.records[0].outcome {
        RecordOutcome::Failed { code, reason } => {
            assert_eq!(code, "partner-error");
            assert!(reason.contains("422"), "{reason}");
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(
        h.notifications(),
        [delivery_fail(
            "803-24-PRTITV-1000307",
            &h.reason("partner-error")
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_interventions_one_bad_give_one_success_and_one_failure() {
    let h = Harness::start().await;
    let good = row("803-24-PRTITV-1000308", "803-100001008");
    let mut bad = row("803-24-PRTITV-1000309", "803-100001009");
    bad.insert("individuals.progres_sex".into(), json!(""));
    // The original used only interventions[0] for its notification.
    let report = handle(&h.handler(), "r-1", &message(vec![bad, good]))
        .await
        .unwrap();
    assert_eq!(report.fetched, 2);
    assert_eq!(report.count("failed"), 1, "{report}");
    assert_eq!(report.count("created"), 1, "{report}");
    let case = &h.cases_of("803-100001008")[0];
    assert!(h.cases_of("803-100001009").is_empty());
    assert_eq!(
        h.notifications(),
        [
            delivery_fail("803-24-PRTITV-1000309", &h.reason("missing-fields")),
            success(case, INTAKE_USER, "803-24-PRTITV-1000308"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_message_does_not_repeat_its_notifications() {
    let h = Harness::start().await;
    let handler = h.handler();
    let mut bad = row("803-24-PRTITV-1000310", "803-100001010");
    bad.remove("individuals.progres_givenname");
    let good = row("803-24-PRTITV-1000311", "803-100001011");
    let msg = message(vec![bad, good]);
    // Only the good one reaches Primero, which is down for its search.
    h.primero.sim().fail_next("GET", "/api/v2/cases", 503, 1);
    assert!(matches!(
        handle(&handler, "r-1", &msg).await,
        Err(HandlerError::Retryable(_))
    ));
    assert_eq!(
        h.notifications(),
        [delivery_fail(
            "803-24-PRTITV-1000310",
            &h.reason("missing-fields")
        )]
    );
    let report = handle(&handler, "r-1", &msg).await.unwrap();
    assert_eq!(report.count("created"), 1, "{report}");
    let case = &h.cases_of("803-100001011")[0];
    assert_eq!(
        h.notifications(),
        [
            delivery_fail("803-24-PRTITV-1000310", &h.reason("missing-fields")),
            success(case, INTAKE_USER, "803-24-PRTITV-1000311"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dtp_unavailable_keeps_the_message_and_the_case_is_not_written_twice() {
    let h = Harness::start().await;
    let handler = h.handler();
    let msg = message(vec![row("803-24-PRTITV-1000312", "803-100001012")]);
    h.dtp.sim().fail_next("/", 503, 1);
    assert!(matches!(
        handle(&handler, "r-1", &msg).await,
        Err(HandlerError::Retryable(_))
    ));
    assert!(h.notifications().is_empty());
    let report = handle(&handler, "r-1", &msg).await.unwrap();
    assert_eq!(report.count("already present"), 1, "{report}");
    let cases = h.cases_of("803-100001012");
    assert_eq!(cases.len(), 1);
    assert_eq!(service_numbers(&cases[0]), ["803-24-PRTITV-1000312"]);
    assert_eq!(
        h.notifications(),
        [success(&cases[0], INTAKE_USER, "803-24-PRTITV-1000312")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_message_is_refused_as_permanent() {
    let h = Harness::start().await;
    let got = h
        .handler()
        .handle(
            InboxKind::PrimeroIncomingReferralDecision,
            "r-1",
            &json!({"interventions": []}),
            TODAY,
            &MessageClaim::unclaimed(),
        )
        .await;
    assert!(matches!(got, Err(HandlerError::Permanent(_))), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_bridge_inbox_serve_with_dtp_pushing() {
    let h = Harness::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // This flow's job only (other jobs may need another deployment's tables).
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::copy(h.project.job_wasm(JOB), jobs.join(format!("{JOB}.wasm"))).unwrap();
    let files = h.pki.write_files(tmp.path()).unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[state]
path = "state.db"

[primero]
base_url = "{primero}"
auth = "basic"
user_name = "{user}"
password = {{ env = "BRIDGE_PRIMERO_PASSWORD" }}

{dtp}
[inbox]
listen = "127.0.0.1:0"
api_key = {{ env = "BRIDGE_INBOX_API_KEY" }}
seal_key = {{ env = "BRIDGE_INBOX_SEAL_KEY" }}

[jobs]
dir = "{jobs}"
mappings = "{mappings}"
allow_placeholders = true
"#,
            primero = h.primero.base_url(),
            user = h.primero_config.user_name,
            dtp = h.dtp.config_toml(&files, "BRIDGE_DTP_SUBSCRIPTION_KEY"),
            jobs = jobs.display(),
            mappings = h.project.mappings(COUNTRY).display(),
        ),
    )
    .unwrap();
    let api_key = "inbox-key-for-the-e2e-test-0123456789";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["inbox", "serve", "--init", "--config"])
        .arg(&config)
        .args(["--today", TODAY])
        .env("BRIDGE_LOG", "debug")
        .env("BRIDGE_PRIMERO_PASSWORD", &h.primero_config.password)
        .env(
            "BRIDGE_DTP_SUBSCRIPTION_KEY",
            &h.dtp.sim().config().subscription_key,
        )
        .env("BRIDGE_INBOX_API_KEY", api_key)
        .env("BRIDGE_INBOX_SEAL_KEY", "11".repeat(32))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let streams = Streams::read(&mut child);
    let url = tokio::task::block_in_place(|| {
        streams.wait_for("inbox listening on ", Duration::from_secs(120))
    })
    .expect("bridge inbox serve printed its address");

    // DTP pushes one message with a good and a bad intervention.
    let good = row("803-24-PRTITV-1000320", "803-100001020");
    let mut bad = row("803-24-PRTITV-1000321", "803-100001021");
    bad.remove("individuals.progres_dateofbirth");
    let answer = bridge_sim::dtp::push_to_inbox(&url, api_key, &message(vec![good, bad]))
        .await
        .unwrap();
    assert_eq!(answer.status, 202, "{:?}", answer.body);

    // The inbox processes it on arrival; wait for both answers to reach DTP.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while h.notifications().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop the server the way a service manager does (this test's own child).
    sigterm(child.id());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = streams.finish();
    let output = format!("{stdout}{stderr}");
    assert!(status.success(), "exit {status:?}\n{output}");

    let cases = h.cases_of("803-100001020");
    assert_eq!(cases.len(), 1, "{output}");
    assert!(h.cases_of("803-100001021").is_empty());
    assert_eq!(
        h.notifications(),
        [
            success(&cases[0], INTAKE_USER, "803-24-PRTITV-1000320"),
            delivery_fail("803-24-PRTITV-1000321", &h.reason("missing-fields")),
        ],
        "{output}"
    );
    // Ids and codes only in the bridge's output, even at debug level.
    assert!(output.contains("record handled"), "{output}");
    for personal in [
        "Nyakuoth",
        "Zzyzxample",
        "+251977123456",
        "2012-03-15",
        "pa.example@unhcr.example",
    ] {
        assert!(
            !output.contains(personal),
            "`{personal}` in the output:\n{output}"
        );
    }
}

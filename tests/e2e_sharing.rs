//! The shared data points (issue 16, part 2), end to end: the manifest the
//! real `bridge mappings manifest` prints is true — every field that
//! arrives at the simulated partners over every flow of both designs is in
//! it — and a field taken out of the declaration makes the flow refuse the
//! record (`undeclared-field`) and send nothing.
//!
//! The simulators keep the raw write bodies they receive (they import no
//! bridge crate); this test canonicalises them with the same function the
//! host checks with (`bridge_mappings::sharing::field_paths`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bridge_demo::round_trip::{design_a, design_b, seed_users, DtpSide, InboxSide};
use bridge_demo::scenario::Simulators;
use bridge_flows::app::{new_run_id, App};
use bridge_flows::sharing_check::UNDECLARED_FIELD;
use bridge_flows::RecordOutcome;
use bridge_mappings::manifest::parse_csv;
use bridge_mappings::sharing::{field_paths, Destination, FLOWS};
use bridge_mappings::MappingSet;
use bridge_partners::dtp::DtpClient;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{JobRuntime, RuntimeConfig};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_sim::primero::NewSimReferral;
use bridge_store::SqliteStore;
use serde_json::{json, Map, Value};

const TODAY: &str = "2025-06-01";

async fn app_for(project: &ProjectDirs, sims: &Simulators, mappings: &Path) -> App {
    let runtime = Arc::new(JobRuntime::new(RuntimeConfig::default()).unwrap());
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    sims.app(store, runtime, &project.jobs_dist(), mappings)
        .await
        .unwrap()
}

/// (destination, path) of every field the real binary's CSV manifest lists
/// for the flows of `design`.
fn manifest(dir: &Path, design: &str) -> BTreeSet<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["mappings", "manifest"])
        .arg(dir)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", bridge_testkit::cli::text(&out));
    let rows = parse_csv(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(rows[0][..4], ["flow", "destination", "write", "path"]);
    let flows: Vec<&str> = FLOWS
        .iter()
        .filter(|f| f.design == design)
        .map(|f| f.flow)
        .collect();
    rows[1..]
        .iter()
        .filter(|r| flows.contains(&r[0].as_str()))
        .map(|r| (r[1].clone(), r[3].clone()))
        .collect()
}

/// What arrived: (destination, field path) of every record of every write
/// body the simulators received.
#[derive(Default)]
struct Observed(BTreeSet<(String, String)>);

impl Observed {
    fn add(&mut self, to: Destination, wire: &Value) {
        let records = to.records(wire);
        assert!(!records.is_empty(), "{to}: a write without a record");
        for record in records {
            for path in field_paths(record) {
                self.0.insert((to.as_str().to_string(), path));
            }
        }
    }

    fn destinations(&self) -> BTreeSet<&str> {
        self.0.iter().map(|(d, _)| d.as_str()).collect()
    }

    fn primero(&mut self, sims: &Simulators) {
        for w in sims.primero_sim().received_writes() {
            let to = match w.endpoint.as_str() {
                "POST /api/v2/cases" => Destination::PrimeroCreateCase,
                "PATCH /api/v2/cases/{id}" => Destination::PrimeroUpdateCase,
                "POST /api/v2/cases/{id}/flags" => Destination::PrimeroFlagCase,
                "PATCH /api/v2/cases/{id}/referrals/{referral_id}" => {
                    Destination::PrimeroUpdateReferral
                }
                other => panic!("a Primero write no declaration knows: {other}"),
            };
            self.add(to, &w.body);
        }
    }

    fn ping(&mut self, sims: &Simulators, set: &MappingSet) {
        let sp = &set.shipping_processes;
        for b in sims.ping_sim().ingestion_bodies() {
            if !(b.path.ends_with("/data") || b.path.ends_with("/asyncdata")) {
                continue; // check status: asks about a transaction, carries no record
            }
            let process = b.body["ShippingProcessId"].as_str().map(str::to_string);
            let to = if process == sp.transfer_status {
                Destination::PingTransferStatus
            } else if process == sp.referral_ingestion {
                Destination::PingReferralIngestion
            } else if process == sp.decision_synced {
                Destination::PingDecisionSynced
            } else {
                panic!("a PING ingestion no declaration knows: {process:?}")
            };
            self.add(to, &b.body);
        }
    }

    fn dtp(&mut self, dtp: &DtpSide) {
        use bridge_sim::dtp::DtpEndpoint as E;
        for (endpoint, to) in [
            (E::ReceiveIncomingReferral, Destination::DtpIncomingReferral),
            (E::ReceiveDecisionOutgoingReferral, Destination::DtpDecision),
            (E::Notification, Destination::DtpNotification),
        ] {
            for body in dtp.dtp.sim().bodies(endpoint) {
                self.add(to, &body);
            }
        }
    }

    /// Every observed field is in the manifest.
    fn assert_within(&self, manifest: &BTreeSet<(String, String)>, design: &str) {
        let outside: Vec<_> = self.0.difference(manifest).collect();
        assert!(
            outside.is_empty(),
            "{design}: fields arrived at the partners that the manifest does not list: {outside:#?}"
        );
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_lists_every_field_that_arrives_design_b() {
    let project = ProjectDirs::locate().unwrap();
    project.build_jobs(&[]).unwrap();
    let dir = project.mappings("kenya-dadaab");
    let sims = Simulators::start_loopback().await.unwrap();
    sims.primero_sim().record_writes();
    let app = app_for(&project, &sims, &dir).await;
    // All four flows: 1.1 (case created, transfer status), 1.2, 2.1, 2.2.
    let rt = design_b(&app, &sims, TODAY).await.unwrap();
    assert!(rt.ok(), "{rt}");
    // A second referral of one child: 1.1 appends the service to the case.
    let child = PeopleGenerator::new(77).person();
    for n in [9_101, 9_102] {
        sims.ping_sim()
            .add_intervention(SimIntervention::for_person(child.clone(), n));
        app.run_flow("ping-1.1", &new_run_id(), TODAY)
            .await
            .unwrap();
    }
    assert_eq!(
        sims.primero_sim()
            .find_by_individual_no(&child.progres_id)
            .len(),
        1
    );

    let set = MappingSet::load_dir(&dir).unwrap();
    let mut seen = Observed::default();
    seen.primero(&sims);
    seen.ping(&sims, &set);
    assert_eq!(
        seen.destinations(),
        [
            "ping.decision-synced",
            "ping.referral-ingestion",
            "ping.transfer-status",
            "primero.create-case",
            "primero.update-case",
            "primero.update-referral",
        ]
        .into_iter()
        .collect(),
        "every write of design B was observed"
    );
    seen.assert_within(&manifest(&dir, "ping"), "design B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_lists_every_field_that_arrives_design_a() {
    use bridge_sim::dtp::{push_to_inbox, referral_message};

    let project = ProjectDirs::locate().unwrap();
    project.build_jobs(&[]).unwrap();
    let dir = project.mappings("ethiopia-gambella");
    let sims = Simulators::start_loopback().await.unwrap();
    sims.primero_sim().record_writes();
    let mut app = app_for(&project, &sims, &dir).await;
    let dtp = DtpSide::start().await.unwrap();
    app.dtp = Some(DtpClient::new(dtp.client_config()).unwrap());
    let inbox = InboxSide::start(&app).await.unwrap();
    // All four flows: 1-1 (case, notification), 1-2, 2-1/2-2, 2-3.
    let rt = design_a(&app, &sims, &dtp, &inbox, TODAY).await.unwrap();
    assert!(rt.ok(), "{rt}");

    // A child whose only case is closed gets a new referral: 1-1 appends,
    // reopens and flags; and a referral of a type Gambella does not accept
    // is answered `Delivery Fail`.
    let child = PeopleGenerator::new(78).person();
    let first = SimIntervention::for_person(child.clone(), 8_101);
    let second = SimIntervention::for_person(child.clone(), 8_102);
    let mut refused = SimIntervention::for_person(PeopleGenerator::new(79).person(), 8_103);
    refused.intervention_type = "Not a service Gambella takes".into();
    let push = |i: &[SimIntervention]| {
        let message = referral_message(i);
        let (url, key) = (inbox.url.clone(), inbox.api_key.clone());
        async move { push_to_inbox(&url, &key, &message).await.unwrap() }
    };
    push(&[first]).await;
    inbox.processor.process_pending(TODAY).await.unwrap();
    let case = sims.primero_sim().find_by_individual_no(&child.progres_id)[0].clone();
    sims.primero_sim()
        .update_case(&case, obj(json!({"status": "closed"})))
        .unwrap();
    push(&[second, refused]).await;
    inbox.processor.process_pending(TODAY).await.unwrap();

    let mut seen = Observed::default();
    seen.primero(&sims);
    seen.dtp(&dtp);
    assert_eq!(
        seen.destinations(),
        [
            "dtp.notification",
            "dtp.receive-decision-outgoing-referral",
            "dtp.receive-incoming-referral",
            "primero.create-case",
            "primero.flag-case",
            "primero.update-case",
            "primero.update-referral",
        ]
        .into_iter()
        .collect(),
        "every write of design A was observed"
    );
    let statuses: BTreeSet<String> = dtp
        .dtp
        .sim()
        .bodies(bridge_sim::dtp::DtpEndpoint::Notification)
        .iter()
        .filter_map(|b| b["status"].as_str().map(str::to_string))
        .collect();
    assert!(statuses.contains("Delivery Fail"), "{statuses:?}");
    seen.assert_within(&manifest(&dir, "dtp"), "design A");
}

/// A copy of a shipped folder with `path` taken out of `flow`'s declaration
/// for `to` (or, with `path` None, without `sharing.toml` at all).
fn narrowed(
    project: &ProjectDirs,
    country: &str,
    cut: Option<(&str, &str, &str)>,
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let from = project.mappings(country);
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let file = tmp.path().join("sharing.toml");
    match cut {
        None => std::fs::remove_file(&file).unwrap(),
        Some((flow, to, path)) => {
            let mut doc: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
            let shares = doc["share"].as_array_mut().unwrap();
            let share = shares
                .iter_mut()
                .find(|s| s["flow"].as_str() == Some(flow) && s["to"].as_str() == Some(to))
                .unwrap();
            let fields = share["field"].as_array_mut().unwrap();
            let before = fields.len();
            fields.retain(|f| f["path"].as_str() != Some(path));
            assert_eq!(fields.len(), before - 1, "{path} was declared");
            std::fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
        }
    }
    tmp
}

fn refused(report: &bridge_flows::RunReport) -> Vec<String> {
    report
        .records
        .iter()
        .filter_map(|r| match &r.outcome {
            RecordOutcome::Failed { code, reason } if code == UNDECLARED_FIELD => {
                Some(reason.clone())
            }
            _ => None,
        })
        .collect()
}

/// A Primero case with one service referred to UNHCR (what 2.1 sends).
fn refer_to_unhcr(sims: &Simulators, seed: u64) {
    let primero = sims.primero_sim();
    let service = uuid::Uuid::new_v4().to_string();
    let case = primero.seed_person(
        &PeopleGenerator::new(seed).person(),
        vec![obj(json!({
            "unique_id": service,
            "service_type": "legal_support",
            "service_implementing_agency": "UNHCR",
        }))],
    );
    primero
        .add_referral(
            &case,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                service_record_id: Some(service),
                ..NewSimReferral::default()
            },
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_taken_out_of_the_declaration_is_refused_and_nothing_is_sent() {
    let project = ProjectDirs::locate().unwrap();
    project.build_jobs(&[]).unwrap();

    // PING 2.1: the child's first name may no longer go to proGres.
    let folder = narrowed(
        &project,
        "kenya-dadaab",
        Some((
            "ping-2.1",
            "ping.referral-ingestion",
            "Fields[progres_pocfirstname]",
        )),
    );
    let sims = Simulators::start_loopback().await.unwrap();
    let app = app_for(&project, &sims, folder.path()).await;
    seed_users(&sims, "unhcr_cw");
    refer_to_unhcr(&sims, 501);
    let report = app
        .run_flow("ping-2.1", &new_run_id(), TODAY)
        .await
        .unwrap();
    let reasons = refused(&report);
    assert_eq!(reasons.len(), 1, "{report:?}");
    for words in [
        "ping-2.1",
        "job ping-2.1@",
        "`Fields[progres_pocfirstname]`",
    ] {
        assert!(reasons[0].contains(words), "{}", reasons[0]);
    }
    assert!(
        sims.ping_sim().ingestion_bodies().is_empty(),
        "sent although refused"
    );
    assert!(sims.ping_sim().interop_referrals().is_empty());

    // PING 1.1: the child's name may no longer go to Primero; the transfer
    // status is not written either (proGres keeps the referral pending).
    let folder = narrowed(
        &project,
        "kenya-dadaab",
        Some(("ping-1.1", "primero.create-case", "name_first")),
    );
    let sims = Simulators::start_loopback().await.unwrap();
    sims.primero_sim().record_writes();
    let app = app_for(&project, &sims, folder.path()).await;
    let child = PeopleGenerator::new(502).person();
    let lpid = sims
        .ping_sim()
        .add_intervention(SimIntervention::for_person(child.clone(), 9_201));
    let report = app
        .run_flow("ping-1.1", &new_run_id(), TODAY)
        .await
        .unwrap();
    let reasons = refused(&report);
    assert_eq!(reasons.len(), 1, "{report:?}");
    assert!(reasons[0].contains("`name_first`"), "{}", reasons[0]);
    assert!(
        !reasons[0].contains(&child.given_name),
        "a value in the reason"
    );
    assert!(sims.primero_sim().received_writes().is_empty());
    assert!(sims.ping_sim().ingestion_bodies().is_empty());
    assert_eq!(
        sims.ping_sim().pending_intervention_ids(),
        vec![lpid],
        "the referral stays pending in proGres"
    );

    // A folder without sharing.toml shares nothing.
    let folder = narrowed(&project, "kenya-dadaab", None);
    let sims = Simulators::start_loopback().await.unwrap();
    let app = app_for(&project, &sims, folder.path()).await;
    seed_users(&sims, "unhcr_cw");
    refer_to_unhcr(&sims, 503);
    let report = app
        .run_flow("ping-2.1", &new_run_id(), TODAY)
        .await
        .unwrap();
    let reasons = refused(&report);
    assert_eq!(reasons.len(), 1, "{report:?}");
    assert!(
        reasons[0].contains("sharing.toml is missing"),
        "{}",
        reasons[0]
    );
    assert!(sims.ping_sim().ingestion_bodies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_taken_out_of_the_declaration_is_refused_and_nothing_is_sent_design_a() {
    let project = ProjectDirs::locate().unwrap();
    project.build_jobs(&[]).unwrap();
    let folder = narrowed(
        &project,
        "ethiopia-gambella",
        Some(("dtp-2.1", "dtp.receive-incoming-referral", "date_of_birth")),
    );
    let sims = Simulators::start_loopback().await.unwrap();
    let mut app = app_for(&project, &sims, folder.path()).await;
    let dtp = DtpSide::start().await.unwrap();
    app.dtp = Some(DtpClient::new(dtp.client_config()).unwrap());
    let unhcr_user = app
        .catalog
        .mappings()
        .deployment
        .unhcr_user
        .clone()
        .unwrap();
    seed_users(&sims, &unhcr_user);
    let primero = sims.primero_sim();
    let service = uuid::Uuid::new_v4().to_string();
    let case = primero.seed_person(
        &PeopleGenerator::new(601).person(),
        vec![obj(json!({
            "unique_id": service,
            "service_type": "legal_support",
            "service_implementing_agency": "UNHCR",
        }))],
    );
    primero
        .add_referral(
            &case,
            NewSimReferral {
                transitioned_to: unhcr_user,
                service_record_id: Some(service),
                ..NewSimReferral::default()
            },
        )
        .unwrap();
    let report = app.run_flow("dtp-2.1", &new_run_id(), TODAY).await.unwrap();
    let reasons = refused(&report);
    assert_eq!(reasons.len(), 1, "{report:?}");
    assert!(reasons[0].contains("dtp-2.1") && reasons[0].contains("`date_of_birth`"));
    assert!(dtp
        .dtp
        .sim()
        .bodies(bridge_sim::dtp::DtpEndpoint::ReceiveIncomingReferral)
        .is_empty());
}

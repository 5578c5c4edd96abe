//! Full round trips through the simulators, for `bridge demo` and the
//! end-to-end tests: a referral goes one way, a person decides on the other
//! side, and the decision comes back.
//!
//! Each step is checked against what the partner simulators hold afterwards,
//! not against what the bridge says about itself.

use std::fmt;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::scenario::Simulators;
use bridge_flows::app::{new_run_id, App};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_sim::primero::{NewSimReferral, SimUser};

/// One checked step of a round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl Step {
    pub fn ok(&self) -> bool {
        self.expected == self.actual
    }
}

/// The steps of the round trips of one design.
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    pub design: String,
    pub steps: Vec<Step>,
}

impl RoundTrips {
    pub fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(Step::ok)
    }

    pub(crate) fn check(
        &mut self,
        what: &str,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) {
        self.steps.push(Step {
            what: what.into(),
            expected: expected.into(),
            actual: actual.into(),
        });
    }
}

impl fmt::Display for RoundTrips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.design)?;
        writeln!(f, "  {:<4} {:<58} {:<26} actual", "", "step", "expected")?;
        for s in &self.steps {
            writeln!(
                f,
                "  {:<4} {:<58} {:<26} {}",
                if s.ok() { "ok" } else { "FAIL" },
                s.what,
                s.expected,
                s.actual
            )?;
        }
        Ok(())
    }
}

pub(crate) fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// The Primero user UNHCR referrals go to, and the caseworker who refers.
pub fn seed_users(sims: &Simulators, unhcr_user: &str) {
    let primero = sims.primero_sim();
    for (user_name, full_name) in [
        (unhcr_user, "UNHCR focal point"),
        (sims.primero_config.user_name.as_str(), "Bridge API user"),
    ] {
        let mut user = SimUser::new(user_name);
        user.full_name = full_name.to_string();
        user.email = Some(format!("{}@primero.example", user_name.replace('@', ".")));
        user.phone = Some("0000000000".into());
        user.position = Some("Caseworker".into());
        primero.add_user(user);
    }
}

/// A Primero case for `person` with one service referred to UNHCR, as a
/// caseworker does it. Returns (case record id, service unique_id, referral).
pub(crate) fn refer_to_unhcr(
    sims: &Simulators,
    person: &bridge_sim::people::Person,
    unhcr_user: &str,
) -> anyhow::Result<(String, String, bridge_sim::primero::SimReferral)> {
    let primero = sims.primero_sim();
    let service_uid = uuid::Uuid::new_v4().to_string();
    let case_id = primero.seed_person(
        person,
        vec![obj(json!({
            "unique_id": service_uid,
            "service_type": "legal_support",
            "service_implementing_agency": "UNHCR",
            "service_referral_notes": "Needs documentation support",
        }))],
    );
    let referral = primero.add_referral(
        &case_id,
        NewSimReferral {
            transitioned_to: unhcr_user.to_string(),
            service_record_id: Some(service_uid.clone()),
            ..NewSimReferral::default()
        },
    )?;
    Ok((case_id, service_uid, referral))
}

/// The caseworker accepts the referral on the case's first service (the
/// instance-specific `unhcr_referral_status` field), having recorded the
/// child's consent at intake: proGres does not transmit it, and without it
/// the consent gate keeps the decision in Primero.
fn accept_first_service(sims: &Simulators, case_id: &str) -> anyhow::Result<()> {
    let primero = sims.primero_sim();
    let case = primero.case(case_id).unwrap_or(Value::Null);
    let service_id = str_of(&case["services_section"][0]["unique_id"]);
    primero.update_case(
        case_id,
        obj(json!({
            "consent_for_services": true,
            "disclosure_other_orgs": true,
            "services_section": [{
                "unique_id": service_id,
                "unhcr_referral_status": "accepted"
            }]
        })),
    )?;
    Ok(())
}

/// Design B (PING): both round trips.
///
/// 1. proGres referral → 1.1 → Primero case; caseworker accepts → 1.2 →
///    proGres transfer status "accepted by Primero".
/// 2. Primero referral to UNHCR → 2.1 → proGres interoperability referral;
///    proGres accepts → 2.2 → Primero referral accepted, proGres "synced".
pub async fn design_b(app: &App, sims: &Simulators, today: &str) -> anyhow::Result<RoundTrips> {
    let mut rt = RoundTrips {
        design: "design B (PING)".into(),
        ..RoundTrips::default()
    };
    let primero = sims.primero_sim();
    let ping = sims.ping_sim();
    let mappings = app.catalog.mappings();
    let unhcr_user = mappings
        .deployment
        .unhcr_user
        .clone()
        .unwrap_or_else(|| "unhcr_cw".into());
    seed_users(sims, &unhcr_user);
    let mut people = PeopleGenerator::new(2024);

    // --- proGres → Primero → decision → proGres
    let child = people.person();
    let lpid = ping.add_intervention(SimIntervention::for_person(child.clone(), 9_001));
    app.run_flow("ping-1.1", &new_run_id(), today).await?;
    let cases = primero.find_by_individual_no(&child.progres_id);
    rt.check(
        "1.1  proGres referral → Primero case",
        "1 case",
        format!("{} case", cases.len()),
    );
    let Some(case_id) = cases.first().cloned() else {
        return Ok(rt);
    };
    rt.check(
        "1.1  proGres told: pending acknowledgement",
        "125080002",
        ping.transfer_status(&lpid).unwrap_or_default(),
    );
    accept_first_service(sims, &case_id)?;
    app.run_flow("ping-1.2", &new_run_id(), today).await?;
    rt.check(
        "1.2  caseworker accepts → proGres transfer status",
        "125080003",
        ping.transfer_status(&lpid).unwrap_or_default(),
    );

    // --- Primero → proGres → decision → Primero
    let (case_id, service_uid, referral) = refer_to_unhcr(sims, &people.person(), &unhcr_user)?;
    app.run_flow("ping-2.1", &new_run_id(), today).await?;
    let interop = ping
        .interop_referrals()
        .into_iter()
        .find(|r| r.org_referral_id.as_deref() == Some(service_uid.as_str()));
    rt.check(
        "2.1  Primero referral → proGres interop referral",
        "created",
        if interop.is_some() {
            "created"
        } else {
            "missing"
        },
    );
    let Some(interop) = interop else {
        return Ok(rt);
    };
    // proGres accepts (125080001 is "accepted" in PING 2.2's status set).
    ping.decide_interop_referral(&interop.id, 125_080_001, None, None);
    app.run_flow("ping-2.2", &new_run_id(), today).await?;
    let status = primero
        .referrals(&case_id)
        .into_iter()
        .find(|r| r.id == referral.id)
        .map(|r| str_of(&serde_json::to_value(r.status).unwrap_or(Value::Null)))
        .unwrap_or_default();
    rt.check(
        "2.2  proGres accepts → Primero referral status",
        "accepted",
        status,
    );
    rt.check(
        "2.2  proGres told: synced with Primero",
        "125080003",
        ping.interop_referral(&interop.id)
            .map(|r| r.status.to_string())
            .unwrap_or_default(),
    );
    let sent_before = ping.interop_referrals().len();
    crate::consent::safeguards(
        app,
        sims,
        (&mut rt, "ping-2.1", today),
        (&mut people, &unhcr_user),
        &case_id,
    )
    .await?;
    rt.check(
        "2.1  proGres got the consented referral, not the refused one",
        "1 more",
        format!("{} more", ping.interop_referrals().len() - sent_before),
    );
    Ok(rt)
}

/// The DTP side of design A: the simulator, behind mutual TLS.
pub struct DtpSide {
    pub dtp: bridge_sim::dtp::RunningDtpSim,
    pub pki: bridge_sim::dtp::TestPki,
}

impl DtpSide {
    pub async fn start() -> anyhow::Result<Self> {
        use bridge_sim::dtp::{DtpSim, DtpSimConfig, TestPki};
        let pki = TestPki::generate();
        let dtp = DtpSim::start_loopback(DtpSimConfig::new(&pki)).await?;
        Ok(Self { dtp, pki })
    }

    /// The DTP client configuration for talking to this simulator.
    pub fn client_config(&self) -> bridge_partners::dtp::DtpConfig {
        dtp_client_config(&self.pki, &self.dtp)
    }
}

/// The DTP client configuration for talking to `sim`, which trusts `pki`:
/// the simulator's subscription key, the PKI's client certificate and its CA
/// as the one extra root.
pub fn dtp_client_config(
    pki: &bridge_sim::dtp::TestPki,
    sim: &bridge_sim::dtp::RunningDtpSim,
) -> bridge_partners::dtp::DtpConfig {
    bridge_partners::dtp::DtpConfig {
        urls: client_urls(sim.urls()),
        subscription_key: sim.config().subscription_key.clone(),
        client_cert_pem: pki.client_cert_pem.clone().into_bytes(),
        client_key_pem: pki.client_key_pem.clone().into_bytes(),
        extra_root_pem: Some(pki.ca_cert_pem.clone().into_bytes()),
        timeout: std::time::Duration::from_secs(30),
    }
}

/// The client's endpoint URLs for a running DTP simulator's (the two crates
/// spell the endpoints each for itself).
pub fn client_urls(sim: bridge_sim::dtp::DtpUrls) -> bridge_partners::dtp::DtpUrls {
    bridge_partners::dtp::DtpUrls {
        receive_incoming_referral: sim.receive_incoming_referral,
        receive_decision_outgoing_referral: sim.receive_decision_outgoing_referral,
        notification: sim.notification,
    }
}

/// A bridge inbox on loopback, its messages going to an app's design A flows.
pub struct InboxSide {
    pub url: String,
    pub api_key: String,
    pub processor: bridge_inbox::InboxProcessor,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for InboxSide {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl InboxSide {
    /// `app` must already have its DTP client (the 1-1 flow notifies DTP).
    pub async fn start(app: &App) -> anyhow::Result<Self> {
        use bridge_inbox::{router, Dispatcher, InboxProcessor, InboxState};
        use bridge_store::Sealer;

        let sealer = Sealer::from_hex(&Sealer::generate_key_hex())?;
        let api_key = format!("demo-{}", uuid::Uuid::new_v4().simple());
        let state = InboxState::new(
            app.store.clone(),
            sealer.clone(),
            &api_key,
            bridge_inbox::http::DEFAULT_MAX_BODY_BYTES,
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!(
            "http://{}{}",
            listener.local_addr()?,
            bridge_inbox::http::INBOX_PATH
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        let processor = InboxProcessor::new(
            app.store.clone(),
            sealer,
            Arc::new(Dispatcher::for_app(app)?),
        );
        Ok(Self {
            url,
            api_key,
            processor,
            server,
        })
    }
}

/// Design A (DTP): both round trips.
///
/// 1. DTP pushes a proGres referral to the inbox → 1-1 → Primero case and a
///    "Pending Acknowledgement" notification; caseworker accepts → 1-2 → DTP
///    receives "acknowledged".
/// 2. Primero referral to UNHCR → 2-1/2-2 → DTP receives the referral; DTP
///    pushes proGres' acceptance → 2-3 → Primero referral accepted.
///
/// `app` must be built for a design A deployment with its `dtp` client
/// pointing at `dtp_side`.
pub async fn design_a(
    app: &App,
    sims: &Simulators,
    dtp_side: &DtpSide,
    inbox: &InboxSide,
    today: &str,
) -> anyhow::Result<RoundTrips> {
    use bridge_sim::dtp::{
        decision_message, push_to_inbox, referral_message, DtpEndpoint, SimDecision,
    };

    let mut rt = RoundTrips {
        design: "design A (DTP, Gambella)".into(),
        ..RoundTrips::default()
    };
    let primero = sims.primero_sim();
    let dtp = dtp_side.dtp.sim();
    let unhcr_user = app
        .catalog
        .mappings()
        .deployment
        .unhcr_user
        .clone()
        .unwrap_or_else(|| "unhcr_cw".into());
    seed_users(sims, &unhcr_user);
    let mut people = PeopleGenerator::new(1991);

    // --- proGres → (DTP push) → Primero → decision → DTP
    let child = people.person();
    let intervention = SimIntervention::for_person(child.clone(), 8_001);
    let number = intervention.intervention_number.clone();
    let pushed = push_to_inbox(
        &inbox.url,
        &inbox.api_key,
        &referral_message(&[intervention]),
    )
    .await?;
    rt.check(
        "1-1  DTP pushes a referral → inbox answer",
        "202",
        pushed.status.to_string(),
    );
    inbox.processor.process_pending(today).await?;
    let cases = primero.find_by_individual_no(&child.progres_id);
    rt.check(
        "1-1  proGres referral → Primero case",
        "1 case",
        format!("{} case", cases.len()),
    );
    let Some(case_id) = cases.first().cloned() else {
        return Ok(rt);
    };
    let notified = dtp
        .bodies(DtpEndpoint::Notification)
        .into_iter()
        .find(|b| b["progres_interventionnumber"] == number.as_str())
        .map(|b| str_of(&b["status"]))
        .unwrap_or_else(|| "(nothing)".into());
    rt.check("1-4  DTP told", "Pending Acknowledgement", notified);
    accept_first_service(sims, &case_id)?;
    app.run_flow("dtp-1.2", &new_run_id(), today).await?;
    let decision = dtp
        .bodies(DtpEndpoint::ReceiveDecisionOutgoingReferral)
        .into_iter()
        .find(|b| b["progres_interventionnumber"] == number.as_str())
        .map(|b| str_of(&b["status"]))
        .unwrap_or_else(|| "(nothing)".into());
    rt.check(
        "1-2  caseworker accepts → DTP decision",
        "acknowledged",
        decision,
    );

    // --- Primero → DTP → decision (DTP push) → Primero
    let (case_id, service_uid, referral) = refer_to_unhcr(sims, &people.person(), &unhcr_user)?;
    app.run_flow("dtp-2.1", &new_run_id(), today).await?;
    let primero_case_id = primero
        .case(&case_id)
        .map(|c| str_of(&c["case_id"]))
        .unwrap_or_default();
    let correlation = format!(
        "{primero_case_id}#{}",
        &service_uid[service_uid.len().saturating_sub(12)..]
    );
    let sent = dtp
        .bodies(DtpEndpoint::ReceiveIncomingReferral)
        .into_iter()
        .any(|b| b["id"] == correlation.as_str());
    rt.check(
        "2-2  Primero referral → DTP ReceiveIncomingReferral",
        "received",
        if sent { "received" } else { "missing" },
    );
    let pushed = push_to_inbox(
        &inbox.url,
        &inbox.api_key,
        &decision_message(&[SimDecision {
            org_referral_id: correlation,
            review_decision: "125080000".into(),
            rejection_reason: None,
            rejection_comment: None,
            referral_number: "REF-IOP-DAD-000000901".into(),
        }]),
    )
    .await?;
    rt.check(
        "2-3  DTP pushes the decision → inbox answer",
        "202",
        pushed.status.to_string(),
    );
    inbox.processor.process_pending(today).await?;
    let status = primero
        .referrals(&case_id)
        .into_iter()
        .find(|r| r.id == referral.id)
        .map(|r| str_of(&serde_json::to_value(r.status).unwrap_or(Value::Null)))
        .unwrap_or_default();
    rt.check(
        "2-3  proGres accepts → Primero referral status",
        "accepted",
        status,
    );
    let sent_before = dtp.bodies(DtpEndpoint::ReceiveIncomingReferral).len();
    crate::consent::safeguards(
        app,
        sims,
        (&mut rt, "dtp-2.1", today),
        (&mut people, &unhcr_user),
        &case_id,
    )
    .await?;
    rt.check(
        "2-2  DTP got the consented referral, not the refused one",
        "1 more",
        format!(
            "{} more",
            dtp.bodies(DtpEndpoint::ReceiveIncomingReferral).len() - sent_before
        ),
    );
    Ok(rt)
}

//! `bridge sim --dtp-port`: the DTP simulator standing in for UNHCR's side of
//! design A, for trying the Gambella design by hand with `bridge run`.
//!
//! What it adds to the Primero simulator: DTP itself (mutual TLS, the test
//! PKI), a `bridge.toml` for design A, a seed, and DTP's pushes to the
//! bridge's inbox. DTP pushes (flows 1-1 and 2-3) whenever it has something
//! to say: the seeded proGres referral, and proGres' decision on each
//! referral DTP receives (the `DecisionPolicy`). A push the inbox cannot take
//! yet (the bridge is not started, or answers 5xx) is tried again every few
//! seconds, as DTP's own retry would.
//!
//! Everything it reports is ids, codes and statuses: no name, date of birth
//! or phone of the seeded people leaves the simulators.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::round_trip::{obj, refer_to_unhcr, seed_users};
use crate::scenario::{Simulators, SIM_INITIAL_CURSOR};
use bridge_flows::registry::{self, Design, FlowSpec};
use bridge_sim::dtp::{
    decision_message, push_to_inbox, referral_message, DtpEndpoint, DtpSim, DtpSimConfig,
    RunningDtpSim, SimDecision, TestPki, TestPkiFiles,
};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_sim::primero::PrimeroSim;

/// The environment variables a DTP trial's `bridge.toml` reads its secrets from.
pub const PRIMERO_PASSWORD_ENV: &str = "BRIDGE_PRIMERO_PASSWORD";
pub const DTP_SUBSCRIPTION_KEY_ENV: &str = "BRIDGE_DTP_SUBSCRIPTION_KEY";
pub const INBOX_API_KEY_ENV: &str = "BRIDGE_INBOX_API_KEY";
pub const INBOX_SEAL_KEY_ENV: &str = "BRIDGE_INBOX_SEAL_KEY";

/// How often a push the inbox could not take yet is tried again.
const PUSH_RETRY: Duration = Duration::from_secs(2);

/// What proGres decides on each referral DTP receives (flow 2-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionPolicy {
    /// proGres accepts it (`progres_reviewdecision` 125080000).
    #[default]
    Accept,
    /// proGres rejects it (125080001, reason 125080002 "Not applicable").
    Reject,
    /// No decision is pushed.
    None,
}

/// The DTP simulator, the test PKI it trusts, and the inbox it pushes to.
pub struct DtpTrial {
    pub dtp: RunningDtpSim,
    pub pki: TestPki,
    /// Where the bridge's inbox is to listen (`[inbox] listen`).
    pub inbox_listen: SocketAddr,
    /// The inbox's URL, for DTP's pushes.
    pub inbox_url: String,
    inbox_api_key: String,
    seal_key_hex: String,
}

impl fmt::Debug for DtpTrial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpTrial")
            .field("dtp", &self.dtp.base_url())
            .field("inbox_url", &self.inbox_url)
            .finish_non_exhaustive()
    }
}

/// The design A flows that `pick` (each flow's spec) selects, in registry order.
fn dtp_flows(pick: fn(&FlowSpec) -> bool) -> Vec<&'static str> {
    registry::all()
        .iter()
        .filter(|f| f.design == Design::Dtp && pick(f))
        .map(|f| f.name)
        .collect()
}

/// `[flows."…"] initial_cursor` of each design A cursor flow: the
/// simulators hold no history.
fn dtp_flows_toml() -> String {
    dtp_flows(FlowSpec::reads_cursor)
        .iter()
        .map(|flow| format!("[flows.\"{flow}\"]\ninitial_cursor = \"{SIM_INITIAL_CURSOR}\"\n\n"))
        .collect()
}

/// Each scheduled design A flow once a minute, spread over the minute.
fn dtp_schedule_toml() -> String {
    let flows = dtp_flows(FlowSpec::is_scheduled);
    let step = 60 / flows.len().max(1);
    flows
        .iter()
        .enumerate()
        .map(|(i, flow)| format!("\"{flow}\" = \"{} * * * * *\"\n", i * step))
        .collect()
}

/// A free port on `host` now (the inbox binds it later, in `bridge run`).
fn free_port(host: std::net::IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
}

impl DtpTrial {
    /// Start the DTP simulator on `dtp_addr` (port 0: any) with a fresh test
    /// PKI; the bridge's inbox is to listen on `inbox_listen` (port 0: a
    /// free port, chosen now).
    pub async fn start(dtp_addr: SocketAddr, mut inbox_listen: SocketAddr) -> anyhow::Result<Self> {
        let pki = TestPki::try_generate()?;
        let dtp = DtpSim::start(DtpSimConfig::new(&pki), dtp_addr).await?;
        if inbox_listen.port() == 0 {
            inbox_listen.set_port(free_port(inbox_listen.ip())?);
        }
        Ok(Self {
            dtp,
            pki,
            inbox_listen,
            // The path is the bridge's own inbox route: DTP is told it, as
            // UNHCR configures DTP with the bridge's URL.
            inbox_url: format!("http://{inbox_listen}{}", bridge_inbox::http::INBOX_PATH),
            inbox_api_key: format!("sim-inbox-{}", uuid::Uuid::new_v4().simple()),
            seal_key_hex: bridge_store::Sealer::generate_key_hex(),
        })
    }

    /// A design A `bridge.toml` for these simulators: Primero, `[dtp]` with
    /// the PKI's files `pki` (paths as given: relative ones are read
    /// against the config's folder), `[inbox]`, the jobs and mapping folder,
    /// every cursor flow's initial cursor, and the DTP flows every minute.
    /// Secrets come from [`DtpTrial::secret_env`]'s variables.
    pub fn config_toml(
        &self,
        sims: &Simulators,
        pki: &TestPkiFiles,
        jobs_dir: &Path,
        mappings: &Path,
    ) -> String {
        let toml_str = |s: &str| toml::Value::String(s.to_string()).to_string();
        format!(
            r#"# Generated by `bridge sim --dtp-port` for its simulators (design A, DTP).
{flows}[state]
path = "state.db"

{primero}
{dtp}
# The inbox DTP pushes to (flows 1-1 and 2-3): the simulator pushes here.
[inbox]
listen = "{inbox}"
api_key = {{ env = "{INBOX_API_KEY_ENV}" }}
seal_key = {{ env = "{INBOX_SEAL_KEY_ENV}" }}

[jobs]
dir = {jobs}
mappings = {mappings}
# The shipped mapping folders' CHANGE-ME placeholders: fine against the simulators only.
allow_placeholders = true

# The DTP flows that read Primero, every minute.
[schedule]
{schedule}"#,
            flows = dtp_flows_toml(),
            schedule = dtp_schedule_toml(),
            primero = sims.primero_toml(),
            dtp = self.dtp.config_toml(pki, DTP_SUBSCRIPTION_KEY_ENV),
            inbox = self.inbox_listen,
            jobs = toml_str(&jobs_dir.display().to_string()),
            mappings = toml_str(&mappings.display().to_string()),
        )
    }

    /// [`DtpTrial::config_toml`] for one of several replicas sharing a
    /// state database: `state` (e.g. `[state]\nurl = "postgres://…"`)
    /// instead of the SQLite file, the inbox on a free port of its own
    /// (each replica prints its address), and no scheduled flow: only the
    /// inbox works.
    pub fn replica_config_toml(
        &self,
        sims: &Simulators,
        pki: &TestPkiFiles,
        jobs_dir: &Path,
        mappings: &Path,
        state: &str,
    ) -> String {
        let text = self.config_toml(sims, pki, jobs_dir, mappings);
        let text = text
            .replacen("[state]\npath = \"state.db\"", state, 1)
            .replacen(
                &format!("listen = \"{}\"", self.inbox_listen),
                "listen = \"127.0.0.1:0\"",
                1,
            );
        // The schedule is last, after its comment line.
        let cut = text
            .find("\n# The DTP flows that read Primero")
            .unwrap_or(text.len());
        format!("{}\n", &text[..cut])
    }

    /// The intervention numbers DTP was told are in Primero (a number told
    /// twice is listed twice).
    pub fn notified(&self) -> Vec<String> {
        self.dtp
            .sim()
            .bodies(DtpEndpoint::Notification)
            .iter()
            .filter(|b| b["status"] == "Pending Acknowledgement")
            .filter_map(|b| b["progres_interventionnumber"].as_str().map(str::to_string))
            .collect()
    }

    /// The variables holding the secrets the config names.
    pub fn secret_env(&self, sims: &Simulators) -> Vec<(&'static str, String)> {
        vec![
            (PRIMERO_PASSWORD_ENV, sims.primero_config.password.clone()),
            (
                DTP_SUBSCRIPTION_KEY_ENV,
                self.dtp.config().subscription_key.clone(),
            ),
            (INBOX_API_KEY_ENV, self.inbox_api_key.clone()),
            (INBOX_SEAL_KEY_ENV, self.seal_key_hex.clone()),
        ]
    }

    /// Watch what DTP receives and push to the inbox, until the returned
    /// receiver is dropped: `pushes` first (the seed's), then proGres'
    /// decision (per `policy`) on each referral DTP receives. What happens is
    /// sent on the receiver, one event per line to show.
    pub fn play(
        &self,
        primero: PrimeroSim,
        pushes: Vec<Push>,
        policy: DecisionPolicy,
    ) -> mpsc::UnboundedReceiver<DtpEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        let player = Player {
            dtp: self.dtp.sim().clone(),
            primero,
            inbox_url: self.inbox_url.clone(),
            api_key: self.inbox_api_key.clone(),
            policy,
            queue: pushes,
            seen: 0,
            decided: 0,
            awaiting: Vec::new(),
            waiting_said: false,
            events,
        };
        tokio::spawn(player.run());
        rx
    }
}

/// A message DTP pushes to the inbox, and what it is, in ids.
#[derive(Debug, Clone)]
pub struct Push {
    pub what: String,
    pub message: Value,
}

/// What the seed put in the simulators.
#[derive(Debug, Clone)]
pub struct DtpSeed {
    /// Primero `case_id` of the case with a service referred to UNHCR: flow
    /// dtp-2.1 sends it.
    pub referred_case: String,
    /// Primero `case_id` of the case holding a caseworker's decision on an
    /// earlier proGres referral: flow dtp-1.2 sends it.
    pub decided_case: String,
    /// The proGres referral DTP pushes (flow 1-1).
    pub pushes: Vec<Push>,
}

impl fmt::Display for DtpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seeded Primero case {}: a service referred to UNHCR (flow dtp-2.1 sends it to DTP)",
            self.referred_case
        )?;
        writeln!(
            f,
            "seeded Primero case {}: the caseworker accepted an earlier proGres referral (flow dtp-1.2 sends the decision to DTP)",
            self.decided_case
        )?;
        for push in &self.pushes {
            writeln!(
                f,
                "seeded {}: DTP pushes it to the inbox as soon as the inbox listens (flow 1-1)",
                push.what
            )?;
        }
        Ok(())
    }
}

/// Seed the design A trial: the Primero users (`unhcr_user` from the
/// mapping folder), a Primero referral to UNHCR, a caseworker's decision on
/// an earlier proGres referral, and a proGres referral for DTP to push.
pub fn seed_dtp(sims: &Simulators, unhcr_user: &str, seed: u64) -> anyhow::Result<DtpSeed> {
    seed_users(sims, unhcr_user);
    let mut people = PeopleGenerator::new(seed);
    let (referred_case, _, _) = refer_to_unhcr(sims, &people.person(), unhcr_user)?;
    let mut n = seed * 1000;
    let mut next_number = || {
        n += 1;
        n
    };
    // An earlier proGres referral already on its case, which the caseworker
    // accepted (with the child's consent, recorded at intake).
    let earlier = SimIntervention::for_person(people.person(), next_number());
    let decided_case = sims.primero_sim().seed_person(
        &earlier.person,
        vec![obj(json!({
            "unique_id": uuid::Uuid::new_v4().to_string(),
            "service_type": "alternative_care",
            "service_request_agency": "UNHCR",
            "service_referral": "external_referral",
            "service_implementing_agency": "UNICEF",
            "unhcr_referral_status": "accepted",
            "progres_interventionnumber": earlier.intervention_number,
        }))],
    );
    // Shown by the `case_id` DTP's messages carry.
    let case_id = |record_id: &str| {
        sims.primero_sim()
            .case(record_id)
            .and_then(|c| c["case_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| record_id.to_string())
    };
    let (referred_case, decided_case) = (case_id(&referred_case), case_id(&decided_case));
    let pushed = SimIntervention::for_person(people.person(), next_number());
    let pushes = vec![Push {
        what: format!("proGres referral {}", pushed.intervention_number),
        message: referral_message(std::slice::from_ref(&pushed)),
    }];
    Ok(DtpSeed {
        referred_case,
        decided_case,
        pushes,
    })
}

/// Something DTP did, in ids, codes and statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtpEvent {
    /// DTP accepted a body on one of its endpoints.
    Received { endpoint: String, ids: String },
    /// The inbox cannot be reached yet; pushes wait (said once).
    WaitingForInbox { url: String, why: String },
    /// The inbox answered a push.
    Pushed { what: String, status: u16 },
    /// The inbox refused a push for good (e.g. 401, 400): not tried again.
    Refused {
        what: String,
        status: u16,
        error: String,
    },
    /// proGres' decision reached the Primero referral it answers (flow 2-3).
    PrimeroReferralDecided { referral: String, status: String },
    /// A referral from proGres is on a Primero case: how its caseworker
    /// accepts it through the Primero API, for flow dtp-1.2 to send.
    CaseworkerCanDecide {
        case_id: String,
        number: String,
        record_id: String,
        service_id: String,
    },
}

impl DtpEvent {
    /// The lines `bridge sim` prints for `event`, with the Primero
    /// simulator's URL and API user for the caseworker's step.
    pub fn lines(&self, primero_url: &str, primero_user: &str) -> Vec<String> {
        match self {
            DtpEvent::Received { endpoint, ids } => vec![format!("DTP received {endpoint}: {ids}")],
            DtpEvent::WaitingForInbox { url, why } => vec![format!(
                "DTP waits for the bridge's inbox at {url} ({why}); start `bridge run` with the written config"
            )],
            DtpEvent::Pushed { what, status } => {
                vec![format!("DTP pushed {what} to the inbox: {status}")]
            }
            DtpEvent::Refused {
                what,
                status,
                error,
            } => vec![format!(
                "DTP pushed {what} to the inbox: refused {status} {error}; not tried again"
            )],
            DtpEvent::PrimeroReferralDecided { referral, status } => vec![format!(
                "Primero referral {referral} (its case and service) is now {status}"
            )],
            DtpEvent::CaseworkerCanDecide {
                case_id,
                number,
                record_id,
                service_id,
            } => {
                let data = json!({"data": {
                    "consent_for_services": true,
                    "disclosure_other_orgs": true,
                    "services_section": [{"unique_id": service_id, "unhcr_referral_status": "accepted"}],
                }});
                vec![
                    format!(
                        "Primero case {case_id} holds proGres referral {number}; to accept it as its caseworker (flow dtp-1.2 then sends the decision to DTP):"
                    ),
                    format!(
                        "  curl -s -o /dev/null -w '%{{http_code}}\\n' -u \"{primero_user}:${PRIMERO_PASSWORD_ENV}\" -X PATCH -H 'Content-Type: application/json' {primero_url}/api/v2/cases/{record_id} -d '{data}'"
                    ),
                ]
            }
        }
    }
}

struct Player {
    dtp: DtpSim,
    primero: PrimeroSim,
    inbox_url: String,
    api_key: String,
    policy: DecisionPolicy,
    queue: Vec<Push>,
    /// Bodies of `dtp.received()` already reported.
    seen: usize,
    /// Decisions pushed so far (numbers the referral numbers).
    decided: u64,
    /// DTP referral ids (`<case_id>#<service id end>`) whose decision was
    /// pushed, until the Primero referral shows it.
    awaiting: Vec<String>,
    waiting_said: bool,
    events: mpsc::UnboundedSender<DtpEvent>,
}

/// The ids and statuses of a body DTP received: never a name or a date.
fn ids_of(endpoint: DtpEndpoint, body: &Value) -> String {
    let text = |k: &str| match &body[k] {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    };
    match endpoint {
        DtpEndpoint::ReceiveIncomingReferral => format!("referral id {}", text("id")),
        DtpEndpoint::ReceiveDecisionOutgoingReferral => format!(
            "intervention {} status {} (case {})",
            text("progres_interventionnumber"),
            text("status"),
            text("case_id")
        ),
        DtpEndpoint::Notification => format!(
            "intervention {} status {} (case {})",
            text("progres_interventionnumber"),
            text("status"),
            text("case_id")
        ),
    }
}

impl Player {
    async fn run(mut self) {
        loop {
            if self.events.is_closed() {
                return;
            }
            self.watch();
            self.push_queued().await;
            self.watch_decisions();
            tokio::time::sleep(if self.queue.is_empty() {
                Duration::from_millis(250)
            } else {
                PUSH_RETRY
            })
            .await;
        }
    }

    fn send(&self, event: DtpEvent) {
        let _ = self.events.send(event);
    }

    /// Report what DTP received since the last look, and queue proGres'
    /// decision on each new referral.
    fn watch(&mut self) {
        let received = self.dtp.received();
        for r in received.iter().skip(self.seen) {
            self.send(DtpEvent::Received {
                endpoint: r.endpoint.name().to_string(),
                ids: ids_of(r.endpoint, &r.body),
            });
            match r.endpoint {
                DtpEndpoint::ReceiveIncomingReferral => self.decide(&r.body),
                DtpEndpoint::Notification => self.caseworker_step(&r.body),
                DtpEndpoint::ReceiveDecisionOutgoingReferral => {}
            }
        }
        self.seen = received.len();
    }

    fn decide(&mut self, referral: &Value) {
        let Some(id) = referral["id"].as_str() else {
            return;
        };
        let (review_decision, rejection_reason, rejection_comment) = match self.policy {
            DecisionPolicy::None => return,
            DecisionPolicy::Accept => ("125080000", None, None),
            DecisionPolicy::Reject => (
                "125080001",
                Some("125080002".to_string()),
                Some("Decided in the DTP simulator".to_string()),
            ),
        };
        self.decided += 1;
        let decision = SimDecision {
            org_referral_id: id.to_string(),
            review_decision: review_decision.into(),
            rejection_reason,
            rejection_comment,
            referral_number: format!("REF-IOP-SIM-{:09}", self.decided),
        };
        let verb = if review_decision == "125080000" {
            "accepts"
        } else {
            "rejects"
        };
        self.queue.push(Push {
            what: format!("proGres {verb} referral {id}"),
            message: decision_message(&[decision]),
        });
        self.awaiting.push(id.to_string());
    }

    /// Report each decided Primero referral once its status shows the decision.
    fn watch_decisions(&mut self) {
        let cases = if self.awaiting.is_empty() {
            return;
        } else {
            self.primero.cases()
        };
        let mut decided = Vec::new();
        for id in &self.awaiting {
            let Some((case_id, service_end)) = id.split_once('#') else {
                continue;
            };
            let Some(record_id) = cases
                .iter()
                .find(|c| c["case_id"] == case_id)
                .and_then(|c| c["id"].as_str())
            else {
                continue;
            };
            let status = self
                .primero
                .referrals(record_id)
                .into_iter()
                .find(|r| {
                    r.service_record_id
                        .as_deref()
                        .is_some_and(|s| s.ends_with(service_end))
                })
                .and_then(|r| serde_json::to_value(r.status).ok())
                .and_then(|v| v.as_str().map(str::to_string));
            if let Some(status @ ("accepted" | "rejected")) = status.as_deref() {
                decided.push((id.clone(), status.to_string()));
            }
        }
        for (referral, status) in decided {
            self.awaiting.retain(|a| *a != referral);
            self.send(DtpEvent::PrimeroReferralDecided { referral, status });
        }
    }

    /// A success notification names the Primero case now holding a proGres
    /// referral: find its service, for the caseworker's step.
    fn caseworker_step(&self, notification: &Value) {
        if notification["status"] != "Pending Acknowledgement" {
            return;
        }
        let (Some(case_id), Some(number)) = (
            notification["case_id"].as_str(),
            notification["progres_interventionnumber"].as_str(),
        ) else {
            return;
        };
        let Some(case) = self
            .primero
            .cases()
            .into_iter()
            .find(|c| c["case_id"] == case_id || c["id"] == case_id)
        else {
            return;
        };
        let service = case["services_section"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| {
                s["progres_interventionnumber"]
                    .as_str()
                    .is_some_and(|n| n.split(',').next() == Some(number))
            });
        if let (Some(record_id), Some(service_id)) = (
            case["id"].as_str(),
            service.and_then(|s| s["unique_id"].as_str()),
        ) {
            self.send(DtpEvent::CaseworkerCanDecide {
                case_id: case_id.to_string(),
                number: number.to_string(),
                record_id: record_id.to_string(),
                service_id: service_id.to_string(),
            });
        }
    }

    /// Push what is queued, in order; keep what the inbox cannot take yet.
    async fn push_queued(&mut self) {
        while let Some(push) = self.queue.first().cloned() {
            match push_to_inbox(&self.inbox_url, &self.api_key, &push.message).await {
                Ok(answer) if (200..300).contains(&answer.status) => {
                    self.waiting_said = false;
                    self.send(DtpEvent::Pushed {
                        what: push.what,
                        status: answer.status,
                    });
                }
                Ok(answer) if answer.status == 429 || answer.status >= 500 => {
                    self.wait_for_inbox(format!("it answered {}", answer.status));
                    return;
                }
                Ok(answer) => self.send(DtpEvent::Refused {
                    what: push.what,
                    status: answer.status,
                    error: answer.body["error"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                }),
                Err(e) => {
                    let why = if e.is_connect() {
                        "not listening yet".to_string()
                    } else {
                        e.to_string()
                    };
                    self.wait_for_inbox(why);
                    return;
                }
            }
            self.queue.remove(0);
        }
    }

    fn wait_for_inbox(&mut self, why: String) {
        if !self.waiting_said {
            self.waiting_said = true;
            self.send(DtpEvent::WaitingForInbox {
                url: self.inbox_url.clone(),
                why,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_schedules_and_bounds_the_dtp_flows_only() {
        // Each scheduled design A flow once a minute, at its own second.
        let schedule = dtp_schedule_toml();
        let mut entries: Vec<(String, String)> = schedule
            .lines()
            .map(|l| {
                let (flow, cron) = l.split_once(" = ").unwrap();
                (flow.trim_matches('"').to_string(), cron.to_string())
            })
            .collect();
        entries.sort();
        let flows: Vec<&str> = entries.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(flows, ["dtp-1.2", "dtp-2.1"], "{schedule}");
        let seconds: std::collections::BTreeSet<&str> = entries
            .iter()
            .map(|(_, cron)| cron.trim_matches('"').split(' ').next().unwrap())
            .collect();
        assert_eq!(seconds.len(), 2, "{schedule}");
        // Every cursor flow of the design has its initial cursor; no PING flow.
        let bounds = dtp_flows_toml();
        for flow in ["dtp-1.2", "dtp-2.1"] {
            assert!(bounds.contains(&format!("[flows.\"{flow}\"]")), "{bounds}");
        }
        assert!(!bounds.contains("ping-") && !schedule.contains("ping-"));
    }

    #[tokio::test]
    async fn a_replica_config_has_the_state_given_a_free_inbox_port_and_no_schedule() {
        let sims = Simulators::start_loopback().await.unwrap();
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let trial = DtpTrial::start(any, any).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = trial.pki.write_files(dir.path()).unwrap();
        let state = "[state]\nurl = \"postgres://bridge@db.example/bridge\"";
        let text = trial.replica_config_toml(&sims, &pki, dir.path(), dir.path(), state);
        assert!(text.contains(state), "{text}");
        assert!(!text.contains("state.db"), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:0\""), "{text}");
        assert!(!text.contains("[schedule]"), "{text}");
        assert!(text.contains("[inbox]") && text.contains("[dtp]"), "{text}");
        toml::from_str::<toml::Value>(&text).expect("valid TOML");
    }

    #[test]
    fn what_dtp_received_is_reported_by_ids_and_statuses_only() {
        let body = json!({
            "id": "case-1#abcdef123456",
            "full_name": "Somebody Private",
            "date_of_birth": "2012-03-15",
        });
        let ids = ids_of(DtpEndpoint::ReceiveIncomingReferral, &body);
        assert_eq!(ids, "referral id case-1#abcdef123456");
        let body = json!({
            "progres_interventionnumber": "803-24-PRTITV-1000001",
            "status": "acknowledged",
            "case_id": "c-1",
            "primero_user": "someone@example.org",
        });
        assert_eq!(
            ids_of(DtpEndpoint::ReceiveDecisionOutgoingReferral, &body),
            "intervention 803-24-PRTITV-1000001 status acknowledged (case c-1)"
        );
    }
}

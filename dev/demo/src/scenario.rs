//! Both simulators started together, the seeded demo scenario for PING
//! workflow 1.1 and what it must produce. Shared by `bridge demo`, `bridge sim`
//! and the end-to-end tests, so the numbers the demo checks are the ones the
//! tests check.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::ping::{PingSim, PingSimConfig, RunningPingSim, SimIntervention, SpecificNeed};
use bridge_sim::primero::{PrimeroSim, PrimeroSimConfig, RunningPrimeroSim};

/// The initial cursor of every cursor flow against the simulators: they hold
/// no history (every record in them is made after this), so nothing is
/// older than it. A real deployment sets the moment the OpenFn jobs stopped.
pub const SIM_INITIAL_CURSOR: &str = "2000-01-01T00:00:00Z";

/// [`SIM_INITIAL_CURSOR`] for each cursor flow, as `App::initial_cursors`.
pub fn sim_initial_cursors() -> std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>> {
    let at = bridge_service::config::parse_rfc3339(SIM_INITIAL_CURSOR)
        .expect("a valid RFC 3339 constant");
    bridge_flows::registry::cursor_names()
        .iter()
        .map(|flow| (flow.to_string(), at))
        .collect()
}

/// `[flows."<flow>"] initial_cursor` sections for [`SIM_INITIAL_CURSOR`].
pub fn sim_initial_cursor_toml() -> String {
    bridge_flows::registry::cursor_names()
        .iter()
        .map(|flow| format!("[flows.\"{flow}\"]\ninitial_cursor = \"{SIM_INITIAL_CURSOR}\"\n\n"))
        .collect()
}

/// The running Primero and PING simulators.
pub struct Simulators {
    pub primero: RunningPrimeroSim,
    pub ping: RunningPingSim,
    pub primero_config: PrimeroSimConfig,
    pub ping_config: PingSimConfig,
}

impl Simulators {
    /// Start both on the given addresses (port 0 picks a free port).
    pub async fn start(primero_addr: SocketAddr, ping_addr: SocketAddr) -> std::io::Result<Self> {
        let primero_config = PrimeroSimConfig::default();
        let ping_config = PingSimConfig::default();
        let primero = PrimeroSim::new(primero_config.clone())
            .start(primero_addr)
            .await?;
        let ping = PingSim::start(ping_config.clone(), ping_addr).await?;
        Ok(Self {
            primero,
            ping,
            primero_config,
            ping_config,
        })
    }

    /// Start both on free loopback ports.
    pub async fn start_loopback() -> std::io::Result<Self> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::start(any, any).await
    }

    pub fn primero_sim(&self) -> &PrimeroSim {
        self.primero.sim()
    }

    pub fn ping_sim(&self) -> &PingSim {
        self.ping.sim()
    }

    /// The `[primero]` section for the Primero simulator; the password is
    /// read from `BRIDGE_PRIMERO_PASSWORD`.
    pub fn primero_toml(&self) -> String {
        format!(
            "[primero]\nbase_url = \"{}\"\nauth = \"basic\"\nuser_name = \"{}\"\npassword = {{ env = \"BRIDGE_PRIMERO_PASSWORD\" }}\n",
            self.primero.base_url(),
            self.primero_config.user_name
        )
    }

    /// A `bridge.toml` for these simulators. Secrets are read from the
    /// variables of [`Simulators::secret_env`].
    pub fn config_toml(&self, jobs_dir: &std::path::Path, mappings: &std::path::Path) -> String {
        format!(
            r#"# Generated for the built-in simulators.
{flows}[state]
path = "state.db"

{primero}
[ping]
base_url = "{ping}"
token_url = "{token_url}"
username = "{ping_user}"
password = {{ env = "BRIDGE_PING_PASSWORD" }}
client_id = "{client_id}"
subscription_key = {{ env = "BRIDGE_PING_SUBSCRIPTION_KEY" }}

[jobs]
dir = "{jobs}"
mappings = "{mappings}"
# The shipped mapping folders' CHANGE-ME placeholders: fine against the simulators only.
allow_placeholders = true
"#,
            flows = sim_initial_cursor_toml(),
            primero = self.primero_toml(),
            ping = self.ping.base_url(),
            token_url = self.ping.token_url(),
            ping_user = self.ping_config.username,
            client_id = self.ping_config.client_id,
            jobs = jobs_dir.display(),
            mappings = mappings.display(),
        )
    }

    /// An App on these simulators (Primero and PING clients) with every job
    /// of `jobs_dist`, the country folder `mappings`, and the simulators'
    /// initial cursors.
    pub async fn app(
        &self,
        store: std::sync::Arc<dyn bridge_store::Store>,
        runtime: std::sync::Arc<bridge_runtime::JobRuntime>,
        jobs_dist: &std::path::Path,
        mappings: &std::path::Path,
    ) -> anyhow::Result<bridge_flows::App> {
        let jobs = bridge_flows::app::job_files(jobs_dist)?;
        let mut app = bridge_flows::App::new(
            store,
            runtime,
            self.primero_client_config(),
            Some(self.ping_client_config()),
            &jobs,
            mappings,
        )
        .await?;
        app.initial_cursors = sim_initial_cursors();
        Ok(app)
    }

    /// A Primero client for the simulator (Basic, as in production).
    pub fn primero_client_config(&self) -> bridge_partners::primero::PrimeroConfig {
        bridge_partners::primero::PrimeroConfig::new(
            self.primero.base_url(),
            bridge_partners::primero::PrimeroAuth::Basic {
                user_name: self.primero_config.user_name.clone(),
                password: self.primero_config.password.clone(),
            },
        )
    }

    /// A Primero client in v2.10 token mode (a login, `POST /api/v2/tokens`,
    /// before the first API call), the simulator switched to v2.10 to match.
    pub fn primero_token_client_config(&self) -> bridge_partners::primero::PrimeroConfig {
        self.primero_sim()
            .set_version(bridge_sim::primero::SimPrimeroVersion::V2_10);
        let mut config = self.primero_client_config();
        config.auth = bridge_partners::primero::PrimeroAuth::V210Token {
            user_name: self.primero_config.user_name.clone(),
            password: self.primero_config.password.clone(),
        };
        config
    }

    /// A PING client for the simulator.
    pub fn ping_client_config(&self) -> bridge_partners::ping::PingConfig {
        bridge_partners::ping::PingConfig {
            base_url: self.ping.base_url(),
            token_url: self.ping.token_url(),
            username: self.ping_config.username.clone(),
            password: self.ping_config.password.clone(),
            client_id: self.ping_config.client_id.clone(),
            scope: bridge_partners::ping::DEFAULT_SCOPE.into(),
            subscription_key: self.ping_config.subscription_key.clone(),
            partner_id: self.ping_config.partner_id.clone(),
            interop_id: self.ping_config.interop_id.clone(),
            timeout: std::time::Duration::from_secs(30),
        }
    }

    /// Environment variables holding the simulators' secrets.
    pub fn secret_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "BRIDGE_PRIMERO_PASSWORD",
                self.primero_config.password.clone(),
            ),
            ("BRIDGE_PING_PASSWORD", self.ping_config.password.clone()),
            (
                "BRIDGE_PING_SUBSCRIPTION_KEY",
                self.ping_config.subscription_key.clone(),
            ),
        ]
    }
}

/// What one run of workflow 1.1 over a seed must report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected11 {
    pub fetched: usize,
    pub created: usize,
    pub updated: usize,
    pub already_present: usize,
    pub held: usize,
    pub failed: usize,
    pub acknowledged: usize,
    /// Interventions still pending in proGres after the run.
    pub still_pending: usize,
}

/// The seeded demo: who is in it and what each run must do.
#[derive(Debug, Clone)]
pub struct Seed11 {
    /// Everyone whose personal data exists in the simulators (for PII scans).
    pub people: Vec<Person>,
    /// Interventions expected to be created as new cases, by lpinterventionid.
    pub created_ids: Vec<String>,
    /// The intervention whose service goes onto an existing case.
    pub updated_id: String,
    /// The re-sent intervention already on its case.
    pub duplicate_id: String,
    /// The intervention with a service type the mapping does not accept.
    pub unmapped_id: String,
    /// The intervention whose individual matches two Primero cases.
    pub ambiguous_id: String,
    pub ambiguous_candidates: Vec<String>,
    /// Primero case count before the first run.
    pub cases_before: usize,
    pub first_run: Expected11,
    /// A second run: only the held and failed come back; nothing is written.
    pub second_run: Expected11,
}

fn service_with_number(number: &str) -> Map<String, Value> {
    json!({
        "service_type": "alternative_care",
        "service_implementing_agency": "UNICEF",
        "service_referral": "external_referral",
        "unhcr_referral_status": "pending",
        "progres_interventionnumber": number,
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Seed the demo scenario: three new referrals (one with 2 languages × 2
/// specific needs = 4 join rows), one for a child who already has a case, one
/// re-send of a referral already transferred, one with an unaccepted service
/// type, one whose individual matches two Primero cases.
pub fn seed_workflow_1_1(sims: &Simulators, seed: u64) -> Seed11 {
    let ping = sims.ping_sim();
    let primero = sims.primero_sim();
    let mut people = PeopleGenerator::new(seed);
    let mut everyone = Vec::new();
    let mut n = seed * 1000;
    let mut next = |p: Person| {
        n += 1;
        SimIntervention::for_person(p, n)
    };

    let mut created_ids = Vec::new();
    for i in 0..3 {
        let person = people.person();
        everyone.push(person.clone());
        let mut intervention = next(person);
        if i == 0 {
            intervention = intervention
                .with_languages(["Nuer", "Swahili"])
                .with_specific_needs(vec![
                    SpecificNeed::unaccompanied_child(),
                    SpecificNeed::child_labour(),
                ]);
        }
        if i == 2 {
            intervention = intervention.with_intervention_type("BIA");
        }
        created_ids.push(ping.add_intervention(intervention));
    }

    // A child already known to Primero, without this service.
    let person = people.person();
    everyone.push(person.clone());
    primero.seed_person(&person, vec![service_with_number("803-24-PRTITV-0000001")]);
    let updated_id = ping.add_intervention(next(person));

    // A re-send: the service with this intervention number is already on the case.
    let person = people.person();
    everyone.push(person.clone());
    let resent = next(person.clone());
    let composite = format!(
        "{},{},{}",
        resent.intervention_number, resent.lpinterventionid, resent.business_unit
    );
    primero.seed_person(&person, vec![service_with_number(&composite)]);
    let duplicate_id = ping.add_intervention(resent);

    // A service type Kenya does not accept (spec §4.1 sample data).
    let person = people.person();
    everyone.push(person.clone());
    let unmapped_id =
        ping.add_intervention(next(person).with_intervention_type("BID / BIA conducted"));

    // Two Primero cases for one individual.
    let person = people.person();
    everyone.push(person.clone());
    let ambiguous_candidates = vec![
        primero.seed_person(&person, vec![]),
        primero.seed_person(&person, vec![]),
    ];
    let ambiguous_id = ping.add_intervention(next(person));

    Seed11 {
        people: everyone,
        created_ids,
        updated_id,
        duplicate_id,
        unmapped_id,
        ambiguous_id,
        ambiguous_candidates,
        cases_before: primero.case_count(),
        first_run: Expected11 {
            fetched: 7,
            created: 3,
            updated: 1,
            already_present: 1,
            held: 1,
            failed: 1,
            acknowledged: 5,
            still_pending: 2,
        },
        second_run: Expected11 {
            fetched: 2,
            created: 0,
            updated: 0,
            already_present: 0,
            held: 1,
            failed: 1,
            acknowledged: 0,
            still_pending: 2,
        },
    }
}

impl Expected11 {
    /// The differences between a report and this expectation, empty when it matches.
    pub fn check(&self, report: &bridge_flows::RunReport, still_pending: usize) -> Vec<String> {
        let actual = Expected11 {
            fetched: report.fetched,
            created: report.count("created"),
            updated: report.count("updated"),
            already_present: report.count("already present"),
            held: report.count("held"),
            failed: report.count("failed"),
            acknowledged: report.acknowledged(),
            still_pending,
        };
        let mut diffs = Vec::new();
        let pairs = [
            ("fetched", self.fetched, actual.fetched),
            ("created", self.created, actual.created),
            ("updated", self.updated, actual.updated),
            (
                "already present",
                self.already_present,
                actual.already_present,
            ),
            ("held", self.held, actual.held),
            ("failed", self.failed, actual.failed),
            ("acknowledged", self.acknowledged, actual.acknowledged),
            (
                "still pending in proGres",
                self.still_pending,
                actual.still_pending,
            ),
        ];
        for (what, want, got) in pairs {
            if want != got {
                diffs.push(format!("{what}: expected {want}, got {got}"));
            }
        }
        if report.aborted.is_some() {
            diffs.push(format!(
                "run stopped early: {}",
                report.aborted.as_deref().unwrap_or_default()
            ));
        }
        diffs
    }
}

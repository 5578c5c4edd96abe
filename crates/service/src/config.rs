//! `bridge.toml`: where the partners are, how to authenticate, which jobs and
//! mappings to serve. Credentials are never in the file itself: each is named
//! by an environment variable (`*_env`) or a file path (`*_file`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use bridge_partners::dtp::DtpConfig;
use bridge_partners::ping::section::PingIds;
use bridge_partners::ping::PingConfig;
use bridge_partners::primero::PrimeroConfig;
use bridge_partners::section::{Resolve, SectionError};

use bridge_mappings::Deployment;
pub use bridge_partners::dtp::section::DtpSection;
pub use bridge_partners::ping::section::PingSection;
pub use bridge_partners::primero::section::{PrimeroAuthMode, PrimeroSection};
pub use bridge_partners::section::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// A problem with a value whose place in the file is known.
    #[error("{file}:{line}: key `{key}`: {message}")]
    KeyAt {
        file: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// What is wrong, without the file and line.
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. }
            | Self::Key { message, .. }
            | Self::KeyAt { message, .. } => message,
        }
    }
}

mod alerts;
mod approvals;
mod audit;
mod checks;
mod cluster;
mod console;
mod state;

pub use alerts::{AlertSettings, AlertsSection};
pub use audit::AuditSection;
pub use cluster::ClusterSection;
pub use console::{ConsoleAccount, ConsoleSection};
pub use state::{StateTarget, StateUrl};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Folder of built job components (`<job>.wasm`).
    pub dir: PathBuf,
    /// The country mapping folder.
    pub mappings: PathBuf,
    /// Per-call time limit of a job.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
    /// Per-instance memory cap of a job.
    #[serde(default)]
    pub memory_mib: Option<usize>,
    /// Records one job instance maps before a fresh one replaces it (0 = never).
    #[serde(default)]
    pub recycle_after_records: Option<u32>,
    /// Job instances mapping one run's records at once, each on a thread of
    /// its own (default: the number of cores).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// `bridge run`: how often to look for changed job components and
    /// mappings (seconds; 0 turns hot reload off).
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
    /// Accept mapping values still marked `CHANGE-ME:` (the shipped
    /// examples). Only for the simulators, the demo and tests: a real
    /// deployment must not go live with placeholders.
    #[serde(default)]
    pub allow_placeholders: bool,
    /// The approvals file `bridge job approve` writes (relative to this file).
    #[serde(default)]
    pub approvals: Option<PathBuf>,
    /// Load and hot-swap only components whose SHA-256 `approvals` lists.
    #[serde(default)]
    pub require_approved: bool,
}

fn default_reload_secs() -> u64 {
    5
}

/// `[delivery]`: when a record goes to the dead letter, and how many records
/// of one run are worked on at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_record_concurrency")]
    pub record_concurrency: usize,
    /// Consecutive runs a held record waits before the dead letter.
    #[serde(default = "default_max_held_runs")]
    pub max_held_runs: u32,
}

impl Default for DeliverySection {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            record_concurrency: default_record_concurrency(),
            max_held_runs: default_max_held_runs(),
        }
    }
}

fn default_max_held_runs() -> u32 {
    bridge_flows::ledger::DEFAULT_MAX_HELD_RUNS
}

fn default_max_attempts() -> u32 {
    5
}

fn default_record_concurrency() -> usize {
    8
}

/// `[retry]`: retries of a failed partner call, for every partner client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    #[serde(default = "default_retry_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_base_delay_ms")]
    pub base_delay_ms: u64,
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Total time one call may spend retrying.
    #[serde(default = "default_budget_secs")]
    pub budget_secs: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_attempts: default_retry_attempts(),
            base_delay_ms: default_base_delay_ms(),
            max_delay_ms: default_max_delay_ms(),
            budget_secs: default_budget_secs(),
        }
    }
}

fn default_retry_attempts() -> u32 {
    4
}

fn default_base_delay_ms() -> u64 {
    200
}

fn default_max_delay_ms() -> u64 {
    5000
}

fn default_budget_secs() -> u64 {
    30
}

/// `[metrics]`: the Prometheus and health endpoint of `bridge run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    #[serde(default = "default_metrics_listen")]
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// Where durable state lives: exactly one of `path` or `url`
/// ([`BridgeConfig::state_target`] reads it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// SQLite database file (the embedded default).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://user@host/db` without its password, or a
    /// secret reference holding the whole URL (replicas share it).
    #[serde(default)]
    pub url: Option<StateUrl>,
}

/// One valid inbox API key during a rotation: its id is what the state
/// database records for each message (never the key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxApiKey {
    pub id: String,
    pub key: SecretRef,
}

/// The inbox DTP pushes to (design A).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxSection {
    #[serde(default = "default_inbox_listen")]
    pub listen: std::net::SocketAddr,
    /// Expected in the `x-api-key` header (recorded as key id `api_key`).
    /// Or, for a rotation, `api_keys`: several, each with an id.
    #[serde(default)]
    pub api_key: Option<SecretRef>,
    #[serde(default)]
    pub api_keys: Vec<InboxApiKey>,
    /// 64 hex characters; seals message bodies at rest.
    pub seal_key: SecretRef,
    /// Older seal keys: they still open what they sealed (a rotation), never seal.
    #[serde(default)]
    pub previous_seal_keys: Vec<SecretRef>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// First retry delay of a kept message (doubles per attempt).
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    /// Connections open at once; default: a quarter of the open-file
    /// limit, at most 256.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// From the first byte of a request to its complete header.
    #[serde(default = "default_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// From the complete header to the complete body.
    #[serde(default = "default_body_timeout_secs")]
    pub body_timeout_secs: u64,
    /// Silence allowed on a connection with no request in progress.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

fn default_header_timeout_secs() -> u64 {
    bridge_inbox::conn::DEFAULT_HEADER_TIMEOUT.as_secs()
}

fn default_body_timeout_secs() -> u64 {
    bridge_inbox::http::DEFAULT_BODY_TIMEOUT.as_secs()
}

fn default_idle_timeout_secs() -> u64 {
    bridge_inbox::conn::DEFAULT_IDLE_TIMEOUT.as_secs()
}

fn default_inbox_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8090))
}

fn default_max_body_bytes() -> usize {
    bridge_inbox::DEFAULT_MAX_BODY_BYTES
}

fn default_retry_secs() -> u64 {
    30
}

/// An RFC 3339 date-time (with its offset) in UTC.
pub fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `[flows."<flow>"]`: settings of one flow.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSection {
    /// Cursor flows: where the first run reads from when the state database
    /// holds no cursor yet (RFC 3339, e.g. the last run of the OpenFn job
    /// this flow replaces). Without it, and without a stored cursor, the
    /// flow refuses to run rather than send every historic record again.
    #[serde(default)]
    pub initial_cursor: Option<toml::Spanned<String>>,
}

pub use bridge_partners::section::limits as partner_limits;

/// The inbox's settings with its secrets read.
#[derive(Clone)]
pub struct InboxSettings {
    pub listen: std::net::SocketAddr,
    /// `(id, key)` of every valid API key.
    pub api_keys: Vec<(String, String)>,
    pub sealer: bridge_store::Sealer,
    pub max_body_bytes: usize,
    pub retry_delay: Duration,
    /// Time to receive a whole body.
    pub body_timeout: Duration,
    /// Connection cap, header and idle deadlines.
    pub limits: bridge_inbox::ConnectionLimits,
}

impl std::fmt::Debug for InboxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxSettings")
            .field("listen", &self.listen)
            .field("api_key", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("retry_delay", &self.retry_delay)
            .field("body_timeout", &self.body_timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Durable state; without it state is kept in memory for this process only.
    pub state: Option<StateSection>,
    pub primero: PrimeroSection,
    pub ping: Option<PingSection>,
    /// Design A: the DTP client.
    pub dtp: Option<DtpSection>,
    /// Design A: the inbox DTP pushes to.
    pub inbox: Option<InboxSection>,
    pub jobs: JobsSection,
    /// `bridge run`: flow name = cron expression (UTC, with seconds).
    #[serde(default)]
    pub schedule: std::collections::BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    pub delivery: DeliverySection,
    #[serde(default)]
    pub retry: RetrySection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The operator's webhook for alerts (consent revoked after a share).
    pub alerts: Option<AlertsSection>,
    /// Per-flow settings: `[flows."ping-1.2"]`.
    #[serde(default)]
    pub flows: std::collections::BTreeMap<String, FlowSection>,
    /// `[audit]`: retention of the audit trail.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[console]`: the operator console of `bridge run`.
    pub console: Option<ConsoleSection>,
    /// `[cluster]`: this process as one of several replicas.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Where the file was read from; relative paths resolve against its folder.
    #[serde(skip)]
    pub file: PathBuf,
    /// The file's text, to name lines in later checks.
    #[serde(skip)]
    text: String,
}

impl BridgeConfig {
    /// Read and check the file: syntax, unknown keys, and the `[schedule]`
    /// (known flows, valid cron expressions). Secrets are read later, by
    /// whoever needs them.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let config = Self::parse(file)?;
        let first = config
            .schedule_problems()
            .into_iter()
            .chain(config.flow_problems())
            .next();
        match first {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// Read the file without the checks beyond its shape (`bridge config
    /// check` runs them all and reports every problem).
    pub fn parse(file: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(file).map_err(|e| ConfigError::Invalid {
            file: file.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let (line, key) =
                bridge_mappings::invalid_utf8_location(e.as_bytes(), e.utf8_error().valid_up_to());
            ConfigError::Invalid {
                file: file.to_path_buf(),
                message: match key {
                    Some(k) => format!("line {line}: key `{k}`: not valid UTF-8 text"),
                    None => format!("line {line}: not valid UTF-8 text"),
                },
            }
        })?;
        let mut config: BridgeConfig = toml::from_str(&text).map_err(|e| {
            // Line and key (named by serde, or the key defined on that line).
            let (line, key) = bridge_mappings::toml_error_location(&text, &e);
            let key = key.map(|k| format!("key `{k}`: ")).unwrap_or_default();
            ConfigError::Invalid {
                file: file.to_path_buf(),
                message: match line {
                    Some(l) => format!("line {l}: {key}{}", e.message().trim()),
                    None => format!("{key}{}", e.message().trim()),
                },
            }
        })?;
        config.file = file.to_path_buf();
        config.text = text;
        Ok(config)
    }

    /// 1-based line of a byte offset of the file.
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The `[schedule]` entries, parsed; errors name `schedule."<flow>"` and
    /// the line.
    pub fn schedules(&self) -> Result<Vec<(String, cron::Schedule)>, ConfigError> {
        if let Some(e) = self.schedule_problems().into_iter().next() {
            return Err(e);
        }
        Ok(self
            .schedule
            .iter()
            .filter_map(|(flow, expr)| {
                cron::Schedule::from_str(expr.get_ref())
                    .ok()
                    .map(|s| (flow.clone(), s))
            })
            .collect())
    }

    /// Every problem of the `[schedule]` section: unknown flows, invalid cron
    /// expressions.
    pub fn schedule_problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        for (flow, expr) in &self.schedule {
            let at = |message: String| ConfigError::KeyAt {
                file: self.file.clone(),
                line: self.line_of(expr.span().start),
                key: format!("schedule.\"{flow}\""),
                message,
            };
            if !bridge_flows::registry::scheduled_names().contains(&flow.as_str()) {
                problems.push(at(format!(
                    "unknown flow; scheduled flows are: {}",
                    bridge_flows::registry::scheduled_names().join(", ")
                )));
                continue;
            }
            if let Err(e) = cron::Schedule::from_str(expr.get_ref()) {
                problems.push(at(format!(
                    "`{}` is not a cron expression ({e}); use six or seven fields with seconds first, e.g. \"0 */5 * * * *\"",
                    expr.get_ref()
                )));
            }
        }
        problems
    }

    /// Every problem of the `[flows]` sections: unknown flows, an
    /// `initial_cursor` on a flow that reads no cursor or that is not an
    /// RFC 3339 date-time.
    pub fn flow_problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        for (flow, section) in &self.flows {
            let key = |k: &str| format!("flows.\"{flow}\"{k}");
            if !bridge_flows::registry::scheduled_names().contains(&flow.as_str()) {
                let line = self
                    .text
                    .find(&format!("\"{flow}\""))
                    .map(|at| self.line_of(at))
                    .unwrap_or(1);
                problems.push(ConfigError::KeyAt {
                    file: self.file.clone(),
                    line,
                    key: key(""),
                    message: format!(
                        "unknown flow; flows are: {}",
                        bridge_flows::registry::scheduled_names().join(", ")
                    ),
                });
                continue;
            }
            let Some(raw) = &section.initial_cursor else {
                continue;
            };
            let at = |message: String| ConfigError::KeyAt {
                file: self.file.clone(),
                line: self.line_of(raw.span().start),
                key: key(".initial_cursor"),
                message,
            };
            if !bridge_flows::registry::cursor_names().contains(&flow.as_str()) {
                problems.push(at(format!(
                    "flow {flow} reads no cursor (the partner's queue says what is pending); initial_cursor applies to {}",
                    bridge_flows::registry::cursor_names().join(", ")
                )));
            } else if parse_rfc3339(raw.get_ref()).is_none() {
                problems.push(at(format!(
                    "`{}` is not an RFC 3339 date-time with a time zone, e.g. \"2026-11-30T00:00:00Z\"",
                    raw.get_ref()
                )));
            }
        }
        problems
    }

    /// The valid `initial_cursor` of each cursor flow that has one.
    pub fn initial_cursors(&self) -> std::collections::BTreeMap<String, DateTime<Utc>> {
        self.flows
            .iter()
            .filter(|(flow, _)| bridge_flows::registry::cursor_names().contains(&flow.as_str()))
            .filter_map(|(flow, s)| {
                let at = parse_rfc3339(s.initial_cursor.as_ref()?.get_ref())?;
                Some((flow.clone(), at))
            })
            .collect()
    }

    /// `[delivery]` and `[retry]` values that cannot work.
    pub fn limit_problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if self.delivery.max_attempts == 0 {
            problems.push(self.key_error("delivery.max_attempts", "must be at least 1"));
        }
        if self.delivery.record_concurrency == 0 {
            problems.push(self.key_error("delivery.record_concurrency", "must be at least 1"));
        }
        if self.delivery.max_held_runs == 0 {
            problems.push(self.key_error("delivery.max_held_runs", "must be at least 1"));
        }
        if self.retry.max_attempts == 0 {
            problems.push(self.key_error("retry.max_attempts", "must be at least 1"));
        }
        if self.retry.max_delay_ms < self.retry.base_delay_ms {
            problems.push(self.key_error(
                "retry.max_delay_ms",
                "must not be less than retry.base_delay_ms",
            ));
        }
        let mut sections = self.primero.validate();
        sections.extend(self.ping.iter().flat_map(|s| s.validate()));
        sections.extend(self.dtp.iter().flat_map(|s| s.validate()));
        problems.extend(
            sections
                .into_iter()
                .map(|e| self.key_error(&e.key, e.message)),
        );
        problems
    }

    /// Every secret the config names, with its key (`primero.password`, …).
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut refs = vec![("primero.password", &self.primero.password)];
        if let Some(p) = &self.ping {
            refs.push(("ping.password", &p.password));
            refs.push(("ping.subscription_key", &p.subscription_key));
        }
        if let Some(d) = &self.dtp {
            refs.push(("dtp.subscription_key", &d.subscription_key));
        }
        if let Some(i) = &self.inbox {
            if let Some(k) = &i.api_key {
                refs.push(("inbox.api_key", k));
            }
            for k in &i.api_keys {
                refs.push(("inbox.api_keys", &k.key));
            }
            refs.push(("inbox.seal_key", &i.seal_key));
            for k in &i.previous_seal_keys {
                refs.push(("inbox.previous_seal_keys", k));
            }
        }
        if let Some(a) = &self.alerts {
            refs.push(("alerts.webhook_secret", &a.webhook_secret));
        }
        if let Some(StateUrl::Secret(url)) = self.state.as_ref().and_then(|s| s.url.as_ref()) {
            refs.push(("state.url", url));
        }
        if let Some(c) = &self.console {
            refs.extend(
                c.accounts
                    .iter()
                    .filter_map(|a| a.token.as_ref())
                    .map(|t| ("console.accounts", t)),
            );
        }
        refs
    }

    /// Whether a secret can be read; the error names the key and where it
    /// was looked for, never the value.
    pub fn check_secret(&self, key: &str, secret: &SecretRef) -> Result<(), ConfigError> {
        self.secret(key, secret).map(|_| ())
    }

    /// A path from the config, relative to the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.file
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(path)
        }
    }

    fn secret(&self, key: &str, secret: &SecretRef) -> Result<String, ConfigError> {
        let err = |message: String| self.key_error_at(key, message);
        let value = match (&secret.env, &secret.file) {
            // A name that cannot be a variable's may be the secret itself.
            (Some(var), None) if !checks::is_env_name(var) => Err(err(
                "`env` must name an environment variable (letters, digits, _), not hold the secret"
                    .into(),
            )),
            (Some(var), None) => std::env::var(var)
                .map_err(|_| err(format!("environment variable {var} is not set"))),
            (None, Some(path)) => std::fs::read_to_string(self.resolve(path))
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| err(format!("cannot read secret file {}: {e}", path.display()))),
            _ => Err(err("give exactly one of `env` or `file`".into())),
        }?;
        match checks::secret_value_problem(key, &value) {
            Some(problem) => Err(err(problem.into())),
            None => Ok(value),
        }
    }

    pub fn primero_client_config(&self) -> Result<PrimeroConfig, ConfigError> {
        self.primero
            .client_config(self, self.retry_policy())
            .map_err(|e| self.section_error(e))
    }

    /// `[retry]` as the clients' retry policy.
    pub fn retry_policy(&self) -> bridge_partners::RetryPolicy {
        bridge_partners::RetryPolicy {
            max_attempts: self.retry.max_attempts.max(1),
            base_delay: Duration::from_millis(self.retry.base_delay_ms),
            max_delay: Duration::from_millis(self.retry.max_delay_ms),
            budget: Duration::from_secs(self.retry.budget_secs),
        }
    }

    /// PING client settings; partner and interop ids come from the deployment.
    pub fn ping_client_config(&self, deployment: &Deployment) -> Result<PingConfig, ConfigError> {
        let s = self.ping.as_ref().ok_or_else(|| ConfigError::Key {
            file: self.file.clone(),
            key: "ping".into(),
            message: "this flow needs a [ping] section".into(),
        })?;
        s.client_config(self, ping_ids(deployment))
            .map_err(|e| self.section_error(e))
    }

    /// A partner section's error, with the file and, where the key is
    /// written in it, the line.
    pub fn section_error(&self, e: SectionError) -> ConfigError {
        self.key_error_at(&e.key, e.message)
    }
}

/// The deployment's ids at PING.
pub fn ping_ids(deployment: &Deployment) -> PingIds<'_> {
    PingIds {
        partner_id: deployment.partner_id.as_deref(),
        interop_id: deployment.interop_id.as_deref(),
    }
}

/// Secrets and files named in the config, read relative to its folder.
impl Resolve for BridgeConfig {
    fn secret(&self, key: &str, secret: &SecretRef) -> Result<String, SectionError> {
        BridgeConfig::secret(self, key, secret).map_err(|e| SectionError::new(key, e.message()))
    }

    fn file(&self, key: &str, path: &Path) -> Result<Vec<u8>, SectionError> {
        std::fs::read(self.resolve(path))
            .map_err(|e| SectionError::new(key, format!("cannot read {}: {e}", path.display())))
    }
}

impl BridgeConfig {
    fn key_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// DTP client settings, when the config has a `[dtp]` section.
    pub fn dtp_client_config(&self) -> Result<Option<DtpConfig>, ConfigError> {
        self.dtp
            .as_ref()
            .map(|s| s.client_config(self).map_err(|e| self.section_error(e)))
            .transpose()
    }

    /// Inbox settings; refuses a missing section, a short API key or a seal
    /// key that is not 64 hex characters.
    pub fn inbox_settings(&self) -> Result<InboxSettings, ConfigError> {
        let s = self
            .inbox
            .as_ref()
            .ok_or_else(|| self.key_error("inbox", "the inbox needs an [inbox] section"))?;
        let mut keys: Vec<(String, &str, &SecretRef)> = Vec::new();
        match (&s.api_key, s.api_keys.is_empty()) {
            (Some(k), true) => keys.push((
                bridge_inbox::http::SINGLE_KEY_ID.to_string(),
                "inbox.api_key",
                k,
            )),
            (None, false) => {
                for k in &s.api_keys {
                    keys.push((k.id.clone(), "inbox.api_keys", &k.key));
                }
            }
            (Some(_), false) => {
                return Err(self.key_error(
                    "inbox.api_keys",
                    "give either api_key or api_keys, not both",
                ))
            }
            (None, true) => {
                return Err(self.key_error(
                    "inbox.api_key",
                    "the inbox needs an API key: api_key, or api_keys = [{ id = \"…\", key = { env = \"…\" } }]",
                ))
            }
        }
        let mut api_keys = Vec::new();
        for (id, key, secret) in keys {
            if id.trim().is_empty() || api_keys.iter().any(|(seen, _)| seen == &id) {
                return Err(self.key_error(key, format!("key id `{id}` is empty or given twice")));
            }
            let value = self.secret(key, secret)?;
            if value.trim().chars().count() < bridge_inbox::http::MIN_API_KEY_CHARS {
                return Err(self.key_error(
                    key,
                    format!(
                        "the API key `{id}` must have at least {} characters",
                        bridge_inbox::http::MIN_API_KEY_CHARS
                    ),
                ));
            }
            api_keys.push((id, value));
        }
        let bad_seal = |key: &str| {
            self.key_error(
                key,
                "must be 64 hex characters (32 random bytes, e.g. `openssl rand -hex 32`)",
            )
        };
        let mut sealer =
            bridge_store::Sealer::from_hex(&self.secret("inbox.seal_key", &s.seal_key)?)
                .map_err(|_| bad_seal("inbox.seal_key"))?;
        for previous in &s.previous_seal_keys {
            sealer = sealer
                .with_previous(&self.secret("inbox.previous_seal_keys", previous)?)
                .map_err(|_| bad_seal("inbox.previous_seal_keys"))?;
        }
        if s.max_body_bytes == 0 {
            return Err(self.key_error("inbox.max_body_bytes", "must be greater than 0"));
        }
        let limits = self.inbox_limits(s)?;
        Ok(InboxSettings {
            listen: s.listen,
            api_keys,
            sealer,
            max_body_bytes: s.max_body_bytes,
            retry_delay: Duration::from_secs(s.retry_secs),
            body_timeout: Duration::from_secs(s.body_timeout_secs),
            limits,
        })
    }
}

impl BridgeConfig {
    /// The inbox's connection cap and deadlines: every deadline 1 s to
    /// 1 h; the cap at least 1 and at most half the open-file limit.
    fn inbox_limits(
        &self,
        s: &InboxSection,
    ) -> Result<bridge_inbox::ConnectionLimits, ConfigError> {
        for (key, secs) in [
            ("inbox.header_timeout_secs", s.header_timeout_secs),
            ("inbox.body_timeout_secs", s.body_timeout_secs),
            ("inbox.idle_timeout_secs", s.idle_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(self.key_error(key, "must be between 1 and 3600 seconds"));
            }
        }
        let max_connections = match s.max_connections {
            None => bridge_inbox::conn::default_max_connections(),
            Some(0) => {
                return Err(self.key_error("inbox.max_connections", "must be at least 1"));
            }
            Some(n) => match bridge_inbox::conn::max_connections_allowed() {
                Some(allowed) if n > allowed => {
                    return Err(self.key_error(
                        "inbox.max_connections",
                        format!(
                            "must be at most {allowed}, half the open-file limit (ulimit -n = {}): \
                             the store, the partner clients and /healthz need descriptors too",
                            bridge_inbox::conn::open_file_limit().unwrap_or_default()
                        ),
                    ));
                }
                _ => n,
            },
        };
        Ok(bridge_inbox::ConnectionLimits {
            max_connections,
            header_timeout: Duration::from_secs(s.header_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        })
    }
}

#[cfg(test)]
mod dtp_inbox_tests {
    use super::*;

    const BASE: &str = "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"X\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n";

    fn load(dir: &Path, extra: &str) -> BridgeConfig {
        let file = dir.join("bridge.toml");
        std::fs::write(&file, format!("{BASE}{extra}")).unwrap();
        BridgeConfig::load(&file).unwrap()
    }

    #[test]
    fn inbox_refuses_missing_or_bad_seal_key_and_short_api_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api"), "0123456789abcdef-key\n").unwrap();
        std::fs::write(dir.path().join("seal"), "abcd\n").unwrap();
        std::fs::write(dir.path().join("short"), "short\n").unwrap();
        std::fs::write(
            dir.path().join("good-seal"),
            format!("{}\n", "ab".repeat(32)),
        )
        .unwrap();

        let e = load(dir.path(), "")
            .inbox_settings()
            .unwrap_err()
            .to_string();
        assert!(e.contains("[inbox]"), "{e}");

        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            format!("{BASE}[inbox]\napi_key = {{ file = \"api\" }}\n"),
        )
        .unwrap();
        let e = BridgeConfig::load(&file).unwrap_err().to_string();
        assert!(e.contains("seal_key"), "seal_key is required: {e}");

        let c = load(
            dir.path(),
            "[inbox]\napi_key = { file = \"api\" }\nseal_key = { file = \"seal\" }\n",
        );
        let e = c.inbox_settings().unwrap_err().to_string();
        assert!(e.contains("inbox.seal_key") && e.contains("64 hex"), "{e}");
        assert!(!e.contains("abcd"), "{e}");

        let c = load(
            dir.path(),
            "[inbox]\napi_key = { file = \"short\" }\nseal_key = { file = \"good-seal\" }\n",
        );
        let e = c.inbox_settings().unwrap_err().to_string();
        assert!(e.contains("inbox.api_key") && !e.contains("short"), "{e}");

        let c = load(
            dir.path(),
            "[inbox]\nlisten = \"127.0.0.1:0\"\napi_key = { file = \"api\" }\nseal_key = { file = \"good-seal\" }\n",
        );
        let s = c.inbox_settings().unwrap();
        assert_eq!(
            s.api_keys,
            [("api_key".to_string(), "0123456789abcdef-key".to_string())]
        );
        assert_eq!(s.max_body_bytes, bridge_inbox::DEFAULT_MAX_BODY_BYTES);
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
        assert_eq!(
            s.limits.max_connections,
            bridge_inbox::conn::default_max_connections()
        );
        assert_eq!(s.body_timeout, bridge_inbox::http::DEFAULT_BODY_TIMEOUT);
    }

    #[test]
    fn inbox_limits_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api"), "0123456789abcdef-key\n").unwrap();
        std::fs::write(dir.path().join("seal"), "ab".repeat(32)).unwrap();
        let with = |extra: &str| {
            load(
                dir.path(),
                &format!("[inbox]\napi_key = {{ file = \"api\" }}\nseal_key = {{ file = \"seal\" }}\n{extra}\n"),
            )
            .inbox_settings()
        };
        let s = with("max_connections = 8\nheader_timeout_secs = 2\nbody_timeout_secs = 3\nidle_timeout_secs = 4").unwrap();
        assert_eq!(s.limits.max_connections, 8);
        assert_eq!(s.limits.header_timeout, Duration::from_secs(2));
        assert_eq!(s.body_timeout, Duration::from_secs(3));
        assert_eq!(s.limits.idle_timeout, Duration::from_secs(4));
        for (extra, key) in [
            ("max_connections = 0", "inbox.max_connections"),
            ("max_connections = 100000000", "inbox.max_connections"),
            ("header_timeout_secs = 0", "inbox.header_timeout_secs"),
            ("body_timeout_secs = 0", "inbox.body_timeout_secs"),
            ("idle_timeout_secs = 7200", "inbox.idle_timeout_secs"),
        ] {
            let e = with(extra).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn dtp_section_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let section = "[dtp]\nreceive_incoming_referral_url = \"https://127.0.0.1:9/a\"\nreceive_decision_outgoing_referral_url = \"https://127.0.0.1:9/b\"\nnotification_url = \"https://127.0.0.1:9/c\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\nsubscription_key = { file = \"sub\" }\n";
        let c = load(dir.path(), section);
        std::fs::write(dir.path().join("sub"), "sub-key\n").unwrap();
        let e = c.dtp_client_config().unwrap_err().to_string();
        assert!(e.contains("dtp.client_cert") && e.contains("c.pem"), "{e}");
        std::fs::write(dir.path().join("c.pem"), "cert").unwrap();
        std::fs::write(dir.path().join("k.pem"), "key").unwrap();
        let d = c.dtp_client_config().unwrap().unwrap();
        assert_eq!(d.subscription_key, "sub-key");
        assert_eq!(d.client_cert_pem, b"cert");
        assert_eq!(d.urls.notification, "https://127.0.0.1:9/c");
        assert!(load(dir.path(), "").dtp_client_config().unwrap().is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_and_missing_secret_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"BRIDGE_TEST_NO_SUCH_VAR\" }\npasword = 1\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n",
        )
        .unwrap();
        let e = BridgeConfig::load(&file).unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("pasword"), "{e}");

        std::fs::write(
            &file,
            "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"BRIDGE_TEST_NO_SUCH_VAR\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n",
        )
        .unwrap();
        let c = BridgeConfig::load(&file).unwrap();
        let e = c.primero_client_config().unwrap_err().to_string();
        assert!(
            e.contains("primero.password") && e.contains("BRIDGE_TEST_NO_SUCH_VAR"),
            "{e}"
        );
        assert_eq!(c.resolve(Path::new("d")), dir.path().join("d"));
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;

    const BASE: &str = "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"X\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n";

    fn write(dir: &Path, extra: &str) -> PathBuf {
        let file = dir.join("bridge.toml");
        std::fs::write(&file, format!("{BASE}{extra}")).unwrap();
        file
    }

    #[test]
    fn schedule_names_unknown_flows_and_bad_cron_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "[schedule]\n\"ping-1.1\" = \"0 */5 * * * *\"\n\"ping-9.9\" = \"0 * * * * *\"\n",
        );
        let e = BridgeConfig::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("schedule.\"ping-9.9\"") && e.contains(":10:"),
            "{e}"
        );
        assert!(e.contains("unknown flow"), "{e}");

        let file = write(
            dir.path(),
            "[schedule]\n\"ping-2.1\" = \"every five minutes\"\n",
        );
        let e = BridgeConfig::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("schedule.\"ping-2.1\"") && e.contains(":9:"),
            "{e}"
        );
        assert!(e.contains("not a cron expression"), "{e}");

        // parse() keeps going so `config check` can list every problem.
        let file = write(
            dir.path(),
            "[schedule]\n\"ping-2.1\" = \"nope\"\n\"dtp-7\" = \"0 * * * * *\"\n",
        );
        let c = BridgeConfig::parse(&file).unwrap();
        assert_eq!(c.schedule_problems().len(), 2);

        let file = write(dir.path(), "[schedule]\n\"ping-1.1\" = \"*/2 * * * * *\"\n");
        let c = BridgeConfig::load(&file).unwrap();
        let s = c.schedules().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "ping-1.1");
    }

    /// bridge.example.toml parses, with its commented-out keys too.
    #[test]
    fn the_example_config_is_valid_with_every_key() {
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bridge.example.toml"
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(&file, &example).unwrap();
        let c = BridgeConfig::load(&file).unwrap();
        assert_eq!(c.schedule.len(), 4);
        assert!(c.limit_problems().is_empty());

        // Uncomment `# key = value` and `# [section]` lines.
        let is_key = |l: &str| {
            let l = l.trim_start_matches('#').trim_start();
            (l.starts_with('[') && l.ends_with(']'))
                || l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-\"".contains(c))
                })
        };
        let full: String = example
            .lines()
            .map(|l| {
                if l.starts_with('#') && is_key(l) {
                    l.trim_start_matches('#').trim_start().to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&file, &full).unwrap();
        let c = BridgeConfig::load(&file).unwrap_or_else(|e| panic!("{e}\n{full}"));
        assert!(c.dtp.is_some() && c.inbox.is_some() && c.ping.is_some());
        assert_eq!(c.console.as_ref().map(|c| c.accounts.len()), Some(2));
        assert_eq!(c.schedule.len(), 6);
        assert_eq!(c.jobs.call_timeout_ms, Some(5000));
    }

    #[test]
    fn auth_defaults_to_basic_and_the_old_token_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = BridgeConfig::load(&write(dir.path(), "")).unwrap();
        assert_eq!(c.primero.auth, PrimeroAuthMode::Basic);

        let with_auth = |mode: &str| {
            let file = dir.path().join("bridge.toml");
            std::fs::write(
                &file,
                BASE.replace("[jobs]", &format!("auth = \"{mode}\"\n[jobs]")),
            )
            .unwrap();
            file
        };
        let c = BridgeConfig::load(&with_auth("v2.10-token")).unwrap();
        assert_eq!(c.primero.auth, PrimeroAuthMode::V210Token);

        // `auth` is line 5 of the file; the message names file, line, key and
        // what to use instead.
        let file = with_auth("token");
        let e = BridgeConfig::load(&file).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("line 5") && e.contains("primero.auth"), "{e}");
        assert!(
            e.contains("v2.11") && e.contains(r#"auth = "basic""#),
            "{e}"
        );
        let report = crate::check::check_config(&file);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("no longer an auth mode")),
            "{report:?}"
        );

        let e = BridgeConfig::load(&with_auth("jwt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`jwt` is not an auth mode"), "{e}");
    }

    #[test]
    fn initial_cursors_are_rfc3339_on_cursor_flows_and_errors_name_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = BridgeConfig::load(&write(
            dir.path(),
            "[flows.\"ping-1.2\"]\ninitial_cursor = \"2026-11-30T00:00:00Z\"\n",
        ))
        .unwrap();
        assert_eq!(
            c.initial_cursors().get("ping-1.2").map(|t| t.to_rfc3339()),
            Some("2026-11-30T00:00:00+00:00".to_string())
        );
        let e = BridgeConfig::load(&write(
            dir.path(),
            "[flows.\"ping-2.1\"]\ninitial_cursor = \"30/11/2026\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":9:")
                && e.contains("flows.\"ping-2.1\".initial_cursor")
                && e.contains("RFC 3339"),
            "{e}"
        );
        let e = BridgeConfig::load(&write(
            dir.path(),
            "[flows.\"ping-1.1\"]\ninitial_cursor = \"2026-11-30T00:00:00Z\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("reads no cursor"), "{e}");
        let e = BridgeConfig::load(&write(dir.path(), "[flows.\"ping-9.9\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown flow") && e.contains(":8:"), "{e}");
    }

    #[test]
    fn new_sections_have_defaults_and_refuse_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let c = BridgeConfig::load(&write(dir.path(), "")).unwrap();
        assert_eq!(c.delivery.max_attempts, 5);
        assert_eq!(c.delivery.record_concurrency, 8);
        assert_eq!(c.retry.max_attempts, 4);
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.jobs.reload_secs, 5);
        assert!(c.limit_problems().is_empty());

        let c = BridgeConfig::load(&write(
            dir.path(),
            "[delivery]\nmax_attempts = 0\nrecord_concurrency = 2\n[retry]\nbase_delay_ms = 900\nmax_delay_ms = 100\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        ))
        .unwrap();
        let problems: Vec<String> = c.limit_problems().iter().map(|e| e.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("delivery.max_attempts"));
        assert!(problems[1].contains("retry.max_delay_ms"));

        let e = BridgeConfig::load(&write(dir.path(), "[delivery]\nmax_atempts = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_atempts") && e.contains("line 9"), "{e}");
    }
}

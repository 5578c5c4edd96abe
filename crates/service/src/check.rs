//! `bridge config check`: every problem of a config, without starting
//! anything. Secrets are read to see that they resolve; their values are
//! never part of a message.

use std::path::{Path, PathBuf};

use crate::config::{BridgeConfig, ConfigError};
use bridge_mappings::MappingSet;
use bridge_runtime::reload::{serves_other_design, Catalog, CatalogError};

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Each makes the config unusable.
    pub problems: Vec<String>,
    /// Worth knowing, not fatal.
    pub warnings: Vec<String>,
    /// One line describing a good config.
    pub summary: String,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn problem(&mut self, message: impl Into<String>) {
        let message = message.into();
        if !self.problems.contains(&message) {
            self.problems.push(message);
        }
    }
}

/// [`check_config`], then what `bridge run` would refuse when it loads the
/// jobs: each component loads (and is approved, where approvals are
/// required), reads only tables the mapping folder has, and its `configure`
/// accepts the folder's deployment values (a missing `module_id` is found
/// here, not at start); each scheduled or pushed flow has its component.
pub async fn check_config_and_jobs(file: &Path, cache_dir: Option<PathBuf>) -> CheckReport {
    let mut report = check_config(file);
    let Ok(config) = BridgeConfig::parse(file) else {
        return report;
    };
    let jobs_dir = config.resolve(&config.jobs.dir);
    let mappings_dir = config.resolve(&config.jobs.mappings);
    let (Ok(files), Ok(set)) = (
        bridge_flows::app::job_files(&jobs_dir),
        MappingSet::load_dir(&mappings_dir),
    ) else {
        // Already reported by the checks above.
        return report;
    };
    let key = |key: &str, message: String| key_problem(&config, key, message);
    let runtime = match crate::build::job_runtime(&config, cache_dir) {
        Ok(r) => r,
        Err(e) => {
            report.problem(key("jobs", format!("{e:#}")));
            return report;
        }
    };
    let catalog = match Catalog::open(runtime, &files, &mappings_dir).await {
        Ok(c) => c,
        // A `[jobs]` entry of deployment.toml naming a job that is not
        // built, or serves another flow.
        Err(CatalogError::Mappings(e)) => {
            report.problem(key("jobs.mappings", e.to_string()));
            return report;
        }
        Err(e) => {
            report.problem(key("jobs.dir", format!("{e}")));
            return report;
        }
    };
    let design = set.deployment.design.as_str();
    let mut needed: Vec<(String, &str)> = config
        .schedule
        .keys()
        .filter(|f| bridge_flows::registry::get(f).is_some() && !serves_other_design(f, design))
        .map(|f| (format!("schedule.\"{f}\""), f.as_str()))
        .collect();
    if config.inbox.is_some() {
        needed.extend(
            bridge_flows::registry::pushed_names()
                .into_iter()
                .filter(|f| !serves_other_design(f, design))
                .map(|f| ("inbox".to_string(), f)),
        );
    }
    for (at, flow) in needed {
        // The flow's own job, or the variant deployment.toml names for it.
        let job = catalog.job_for(flow);
        if catalog.job(&job).is_none() {
            report.problem(key(
                &at,
                format!(
                    "flow {flow} has no job component in {} (`bridge jobs build {job}`)",
                    jobs_dir.display()
                ),
            ));
        }
    }
    if !set.jobs.is_empty() {
        let variants: Vec<String> = set
            .jobs
            .iter()
            .map(|c| format!("{} by {}", c.flow, c.job))
            .collect();
        report.summary.push_str(&format!(
            ", flows served by a variant: {}",
            variants.join(", ")
        ));
    }
    report
}

/// Check the config file.
pub fn check_config(file: &Path) -> CheckReport {
    let mut report = CheckReport::default();
    let config = match BridgeConfig::parse(file) {
        Ok(c) => c,
        Err(e) => {
            report.problem(e.to_string());
            return report;
        }
    };
    let key = |key: &str, message: String| key_problem(&config, key, message);

    // Secrets resolve (values are never shown).
    let mut secrets_ok = std::collections::BTreeSet::new();
    for (name, secret) in config.secret_refs() {
        match config.check_secret(name, secret) {
            Ok(()) => {
                secrets_ok.insert(name);
            }
            Err(e) => report.problem(e.to_string()),
        }
    }

    for e in config.schedule_problems() {
        report.problem(e.to_string());
    }
    for e in config.limit_problems() {
        report.problem(e.to_string());
    }
    for e in config.service_problems() {
        report.problem(e.to_string());
    }
    report.warnings.extend(config.listener_warnings());

    // Primero's auth mode (its password is already checked above).
    if secrets_ok.contains("primero.password") {
        if let Err(e) = config.primero_client_config() {
            report.problem(e.to_string());
        }
    }

    // Job components.
    let jobs_dir = config.resolve(&config.jobs.dir);
    let jobs = match bridge_flows::app::job_files(&jobs_dir) {
        Ok(files) => files.len(),
        Err(e) => {
            report.problem(key("jobs.dir", format!("{e:#}")));
            0
        }
    };

    // Mappings, and the flows the deployment's design serves.
    let mappings_dir = config.resolve(&config.jobs.mappings);
    let mut design = None;
    match MappingSet::load_dir(&mappings_dir) {
        Ok(set) => {
            for p in &set.placeholders {
                if config.jobs.allow_placeholders {
                    report
                        .warnings
                        .push(format!("{p} (allowed by jobs.allow_placeholders)"));
                } else {
                    report.problem(p.to_string());
                }
            }
            let d = set.deployment.design.clone();
            for flow in config.schedule.keys() {
                if bridge_flows::registry::scheduled_names().contains(&flow.as_str())
                    && serves_other_design(flow, &d)
                {
                    report.problem(key(
                        &format!("schedule.\"{flow}\""),
                        format!(
                            "flow {flow} belongs to the other design; this deployment ({}) uses the {d} design",
                            mappings_dir.display()
                        ),
                    ));
                }
                if flow.starts_with("ping-") && config.ping.is_none() {
                    report.problem(key(
                        &format!("schedule.\"{flow}\""),
                        format!("flow {flow} needs a [ping] section"),
                    ));
                }
                if flow.starts_with("dtp-") && config.dtp.is_none() {
                    report.problem(key(
                        &format!("schedule.\"{flow}\""),
                        format!("flow {flow} needs a [dtp] section"),
                    ));
                }
            }
            if config.ping.is_some()
                && secrets_ok.contains("ping.password")
                && secrets_ok.contains("ping.subscription_key")
            {
                if let Err(e) = config.ping_client_config(&set.deployment) {
                    report.problem(e.to_string());
                }
            }
            if config.inbox.is_some() && d != "dtp" {
                report.warnings.push(format!(
                    "{}: [inbox] is for the DTP design; this deployment uses the {d} design",
                    config.file.display()
                ));
            }
            design = Some(d);
        }
        Err(e) => report.problem(key("jobs.mappings", e.to_string())),
    }

    // DTP client files.
    if config.dtp.is_some() && secrets_ok.contains("dtp.subscription_key") {
        if let Err(e) = config.dtp_client_config() {
            report.problem(e.to_string());
        }
    }

    // The inbox: key length, seal key of 64 hex characters.
    let inbox_secrets_ok = config
        .secret_refs()
        .iter()
        .filter(|(name, _)| name.starts_with("inbox."))
        .all(|(name, _)| secrets_ok.contains(name));
    if config.inbox.is_some() && inbox_secrets_ok {
        if let Err(e) = config.inbox_settings() {
            report.problem(e.to_string());
        }
    }
    if config.inbox.is_some() && config.state.is_none() {
        report.problem(key(
            "state",
            "the inbox needs a [state] section: accepted messages must survive a restart".into(),
        ));
    }
    if config.state.is_none() {
        report.warnings.push(format!(
            "{}: no [state] section: `bridge run` refuses to start without one",
            config.file.display()
        ));
    }
    if config.jobs.allow_placeholders {
        report.warnings.push(format!(
            "{}: key `jobs.allow_placeholders` is set: for the simulators, the demo and tests only; a real deployment must not go live with it",
            config.file.display()
        ));
    }
    for e in config.flow_problems() {
        report.problem(e.to_string());
    }
    let initial = config.initial_cursors();
    for flow in config.schedule.keys() {
        if bridge_flows::registry::cursor_names().contains(&flow.as_str())
            && !initial.contains_key(flow)
        {
            report.warnings.push(format!(
                "{}: flow {flow} has no `initial_cursor` under [flows.\"{flow}\"]: it runs only if the state database already holds its cursor (`bridge cursor show`), else it is refused",
                config.file.display()
            ));
        }
    }
    if config.schedule.is_empty() {
        report.warnings.push(format!(
            "{}: no [schedule] entries: `bridge run` runs no pull flow",
            config.file.display()
        ));
    }

    let flows: Vec<&str> = config.schedule.keys().map(String::as_str).collect();
    report.summary = format!(
        "config OK: {}: design {}, {} job component(s), scheduled flows: {}, inbox: {}, metrics on {}",
        config.file.display(),
        design.as_deref().unwrap_or("?"),
        jobs,
        if flows.is_empty() {
            "none".to_string()
        } else {
            flows.join(", ")
        },
        config
            .inbox
            .as_ref()
            .map(|i| i.listen.to_string())
            .unwrap_or_else(|| "off".into()),
        config.metrics.listen,
    );
    report
}

/// What `bridge run` checks before it takes a reloaded configuration
/// (SIGHUP): everything `config check` checks; the configuration as read.
/// The error lists the problems (each names file, line and key; secrets are
/// never shown).
pub fn check_reload(file: &Path) -> anyhow::Result<BridgeConfig> {
    let report = check_config(file);
    anyhow::ensure!(
        report.problems.is_empty(),
        "{} problem(s): {}",
        report.problems.len(),
        report.problems.join("; ")
    );
    Ok(BridgeConfig::load(file)?)
}

/// A problem of one key of the config, as a line: file, line and key.
fn key_problem(config: &BridgeConfig, key: &str, message: String) -> String {
    ConfigError::Key {
        file: config.file.clone(),
        key: key.to_string(),
        message,
    }
    .to_string()
}

//! `bridge doctor`: a preflight against the real partners, with the
//! configured credentials and read-only calls only (no write, no
//! acknowledgement, no state database opened). Each finding says what was
//! seen, how bad it is, and what to change where.
//!
//! One file per partner: [`primero`], [`ping`], [`dtp`]. Calls go through the
//! bridge's own clients, with retries off so each check is one request and a
//! failure is reported as it happened.

pub mod dtp;
pub mod ping;
pub mod primero;

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::BridgeConfig;
use bridge_mappings::MappingSet;
use bridge_partners::TransportCause;

/// How bad a finding is. `Error` makes `bridge doctor` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One check's outcome. `message` holds ids, codes, counts and URLs only,
/// never a record's content or a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name of the check, e.g. `primero.filter.case_id`.
    pub check: String,
    pub severity: Severity,
    pub message: String,
    /// What to change, and where (config key, Primero role, deployment.toml
    /// key, UNHCR side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            severity: Severity::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warning(
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            severity: Severity::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn error(
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            severity: Severity::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every finding of one `bridge doctor` run, in the order checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    pub fn has_errors(&self) -> bool {
        self.count(Severity::Error) > 0
    }

    /// The findings of one check.
    pub fn check(&self, name: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == name).collect()
    }

    /// `{"ok": …, "errors": n, "warnings": n, "findings": […]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": !self.has_errors(),
            "errors": self.count(Severity::Error),
            "warnings": self.count(Severity::Warning),
            "findings": self.findings,
        })
    }

    /// One line per finding, the fix indented below it, then the totals.
    pub fn to_human(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{:<7}  {:<width$}  {}",
                f.severity.label(),
                f.check,
                f.message
            );
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "{:<7}  {:<width$}  fix: {fix}", "", "");
            }
        }
        let _ = writeln!(
            out,
            "{} error(s), {} warning(s), {} ok",
            self.count(Severity::Error),
            self.count(Severity::Warning),
            self.count(Severity::Ok)
        );
        out
    }
}

/// Run every check that applies to this config and its mapping folder's
/// design: Primero always, then PING (`design = "ping"`) or DTP (`"dtp"`).
pub async fn run(config: &BridgeConfig) -> Report {
    let mut report = Report::default();
    let out = &mut report.findings;
    let mappings_dir = config.resolve(&config.jobs.mappings);
    let mappings = match MappingSet::load_dir(&mappings_dir) {
        Ok(m) => {
            out.push(Finding::ok(
                "mappings",
                format!(
                    "{} loaded: country `{}`, design `{}`",
                    mappings_dir.display(),
                    m.deployment.country,
                    m.deployment.design
                ),
            ));
            Some(m)
        }
        Err(e) => {
            out.push(Finding::error(
                "mappings",
                format!("the mapping folder cannot be loaded: {e}"),
                format!(
                    "fix the file and key named, or `jobs.mappings` in {}",
                    config.file.display()
                ),
            ));
            None
        }
    };
    primero::check(config, mappings.as_ref().map(|m| &m.deployment), out).await;
    let Some(mappings) = mappings else {
        return report;
    };
    match mappings.deployment.design.as_str() {
        "ping" => ping::check(config, &mappings, out).await,
        "dtp" => dtp::check(config, out).await,
        _ => {}
    }
    report
}

/// What an operator can do about a failure to connect.
pub(crate) fn transport_fix(cause: TransportCause, url_key: &str, file: &str) -> String {
    match cause {
        TransportCause::Dns => format!(
            "the host name does not resolve: check `{url_key}` in {file}, and DNS from this machine"
        ),
        TransportCause::Refused => format!(
            "nothing accepts connections there: check the port in `{url_key}` in {file}, that the service is up, and firewalls between"
        ),
        TransportCause::Timeout => format!(
            "no answer in time: check `{url_key}` in {file}, firewalls and proxies between, or raise the section's `timeout_secs`"
        ),
        TransportCause::TlsServerCertificate => format!(
            "this machine does not trust the server's certificate: check the host name in `{url_key}` in {file} (it must match the certificate), the server's certificate chain, or (a private CA only) the section's extra root"
        ),
        TransportCause::TlsRefusedByServer | TransportCause::Tls => format!(
            "the TLS handshake failed: check that `{url_key}` in {file} is the https URL the partner gave"
        ),
        TransportCause::Connect | TransportCause::Body | TransportCause::Other => format!(
            "check `{url_key}` in {file} and the network path to it"
        ),
    }
}

/// A URL as shown in findings: without query or fragment.
pub(crate) fn shown_url(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

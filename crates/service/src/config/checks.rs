//! Values of `bridge.toml` that parse but would break the service, refused
//! with file, line and key; and reading a secret reference without ever
//! putting a value that might be a secret into a message.

use std::net::SocketAddr;
use std::str::FromStr as _;

use super::{BridgeConfig, ConfigError};

/// Whether `name` can be an environment variable's name. Anything else is
/// not quoted back: it may be the secret written where its name belongs.
pub(super) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Secrets sent in an HTTP header, compared byte for byte: a space at either
/// end never matches (header values are trimmed on the wire).
const HEADER_SECRETS: &[&str] = &[
    "inbox.api_key",
    "ping.subscription_key",
    "dtp.subscription_key",
];

/// Why a secret's value cannot work; never the value.
pub(super) fn secret_value_problem(key: &str, value: &str) -> Option<&'static str> {
    if value.trim().is_empty() {
        return Some("the secret is empty");
    }
    if HEADER_SECRETS.contains(&key) && value.trim() != value {
        return Some(
            "the secret starts or ends with white space, which an HTTP header cannot carry: every request would be refused",
        );
    }
    None
}

impl BridgeConfig {
    /// 1-based line defining `section.key` (or the header of `section`),
    /// for errors raised after parsing.
    fn line_of_key(&self, dotted: &str) -> Option<usize> {
        let (section, key) = match dotted.rsplit_once('.') {
            Some((s, k)) => (s, Some(k)),
            None => (dotted, None),
        };
        let mut table = String::new();
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                table = name.trim().to_string();
                if key.is_none() && table == section {
                    return Some(i + 1);
                }
                continue;
            }
            let Some(k) = key else { continue };
            let defined = t
                .split_once('=')
                .map(|(name, _)| name.trim().trim_matches('"'));
            if table == section && defined == Some(k) {
                return Some(i + 1);
            }
        }
        None
    }

    /// An error naming the key, and its line when the file has it.
    pub(super) fn key_error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        match self.line_of_key(key) {
            Some(line) => ConfigError::KeyAt {
                file: self.file.clone(),
                line,
                key: key.to_string(),
                message: message.into(),
            },
            None => self.key_error(key, message),
        }
    }

    /// Values that parse but that the service cannot work with: zero
    /// timeouts and limits, a retry delay of 0, a cron expression that never
    /// fires, a state path that is not a regular file.
    pub fn service_problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let mut zero = |key: &str, value: u64, what: &str| {
            if value == 0 {
                problems.push(self.key_error_at(key, format!("must be at least 1 ({what})")));
            }
        };
        zero("primero.timeout_secs", self.primero.timeout_secs, "seconds");
        if let Some(p) = &self.ping {
            zero("ping.timeout_secs", p.timeout_secs, "seconds");
        }
        if let Some(d) = &self.dtp {
            zero("dtp.timeout_secs", d.timeout_secs, "seconds");
        }
        if let Some(i) = &self.inbox {
            // 0 answered a message Delivery Fail seconds after its 202.
            zero("inbox.retry_secs", i.retry_secs, "seconds");
        }
        if let Some(ms) = self.jobs.call_timeout_ms {
            zero("jobs.call_timeout_ms", ms, "milliseconds");
        }
        if let Some(mib) = self.jobs.memory_mib {
            zero("jobs.memory_mib", mib as u64, "MiB");
        }
        if let Some(n) = self.jobs.pool_size {
            zero("jobs.pool_size", n as u64, "job instances");
        }
        zero("retry.budget_secs", self.retry.budget_secs, "seconds");
        zero(
            "retry.max_delay_ms",
            self.retry.max_delay_ms,
            "milliseconds",
        );

        problems.extend(self.alert_problems());
        problems.extend(self.cluster_problems());
        problems.extend(self.console_problems());

        for (flow, expr) in &self.schedule {
            let Ok(schedule) = cron::Schedule::from_str(expr.get_ref()) else {
                continue; // schedule_problems names it
            };
            if schedule.upcoming(chrono::Utc).next().is_none() {
                problems.push(ConfigError::KeyAt {
                    file: self.file.clone(),
                    line: self.line_of(expr.span().start),
                    key: format!("schedule.\"{flow}\""),
                    message: format!(
                        "`{}` never fires (no such date, or only in the past)",
                        expr.get_ref()
                    ),
                });
            }
        }

        problems.extend(self.state_problems());
        problems.extend(self.audit_problems());
        problems.extend(self.approval_problems());
        problems
    }

    /// Listeners reachable from beyond this machine: worth a warning.
    pub fn listener_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |key: &str, addr: SocketAddr, what: &str| {
            if !addr.ip().is_loopback() {
                let at = self
                    .line_of_key(key)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default();
                out.push(format!(
                    "{}{at}: key `{key}`: {addr} is not a loopback address: {what} is reachable from other machines",
                    self.file.display()
                ));
            }
        };
        check(
            "metrics.listen",
            self.metrics.listen,
            "the metrics and health endpoint",
        );
        if let Some(i) = &self.inbox {
            check(
                "inbox.listen",
                i.listen,
                "the inbox (put it behind the TLS proxy DTP reaches)",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    const BASE: &str = "[state]\npath = \"state.db\"\n[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"X\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n";

    fn write(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("bridge.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn a_secret_written_in_the_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        for value in [
            "\"hunter2-CANARY\"",
            "12345678901",
            "[\"hunter2-CANARY\"]",
            "{ env = 98765432 }",
        ] {
            let text = BASE.replace("{ env = \"X\" }", value);
            let e = BridgeConfig::load(&write(dir.path(), &text))
                .unwrap_err()
                .to_string();
            assert!(
                !e.contains("CANARY") && !e.contains("12345678901") && !e.contains("98765432"),
                "{e}"
            );
            assert!(e.contains("line 6") && e.contains("password"), "{e}");
        }
    }

    #[test]
    fn values_that_break_the_service_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}call_timeout_ms = 0\npool_size = 0\n[inbox]\nlisten = \"0.0.0.0:8090\"\napi_key = {{ env = \"A\" }}\nseal_key = {{ env = \"S\" }}\nretry_secs = 0\n[retry]\nbudget_secs = 0\n[schedule]\n\"ping-1.1\" = \"0 0 0 30 2 *\"\n"
        );
        let c = BridgeConfig::load(&write(dir.path(), &text)).unwrap();
        let problems: Vec<String> = c.service_problems().iter().map(|e| e.to_string()).collect();
        let has = |key: &str, line: usize| {
            problems
                .iter()
                .any(|p| p.contains(&format!(":{line}: key `{key}`")))
        };
        assert!(has("jobs.call_timeout_ms", 10), "{problems:?}");
        assert!(has("jobs.pool_size", 11), "{problems:?}");
        assert!(has("inbox.retry_secs", 16), "{problems:?}");
        assert!(has("retry.budget_secs", 18), "{problems:?}");
        assert!(has("schedule.\"ping-1.1\"", 20), "{problems:?}");
        assert_eq!(problems.len(), 5, "{problems:?}");
        let warnings = c.listener_warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("inbox.listen"),
            "{warnings:?}"
        );

        std::fs::create_dir(dir.path().join("state.db")).unwrap();
        let c = BridgeConfig::load(&write(dir.path(), BASE)).unwrap();
        let problems: Vec<String> = c.service_problems().iter().map(|e| e.to_string()).collect();
        assert!(
            problems.len() == 1 && problems[0].contains(":2: key `state.path`"),
            "{problems:?}"
        );
    }

    #[test]
    fn empty_or_padded_secrets_are_refused_without_their_value() {
        assert!(secret_value_problem("primero.password", "").is_some());
        assert!(secret_value_problem("primero.password", " \t").is_some());
        assert!(secret_value_problem("inbox.api_key", "0123456789abcdef ").is_some());
        assert!(secret_value_problem("primero.password", "pass word ").is_none());
        assert!(secret_value_problem("inbox.api_key", "0123456789abcdef").is_none());
        assert!(is_env_name("BRIDGE_X_1") && !is_env_name("hunter 2") && !is_env_name("1A"));
    }
}

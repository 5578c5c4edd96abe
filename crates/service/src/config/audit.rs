//! `[audit]`: how long the audit trail is kept (issue 16). Without the
//! section, or without `retain_days`, it is kept forever.

use serde::Deserialize;

use super::{BridgeConfig, ConfigError};

/// Longest retention accepted (100 years): more is a typo.
pub const MAX_RETAIN_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Entries older than this many days are removed once a day by the
    /// running service (the chain stays verifiable: docs/auditor/audit-trail.md).
    #[serde(default)]
    pub retain_days: Option<u32>,
}

impl BridgeConfig {
    /// Problems of the `[audit]` section, naming file, line and key.
    pub fn audit_problems(&self) -> Vec<ConfigError> {
        match self.audit.retain_days {
            Some(0) => vec![self.key_error_at(
                "audit.retain_days",
                "must be at least 1 (days); leave it out to keep the audit trail forever",
            )],
            Some(d) if d > MAX_RETAIN_DAYS => vec![self.key_error_at(
                "audit.retain_days",
                format!("must be at most {MAX_RETAIN_DAYS} days"),
            )],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"X\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n";

    fn load(extra: &str) -> Result<BridgeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(&file, format!("{BASE}{extra}")).unwrap();
        BridgeConfig::load(&file)
    }

    #[test]
    fn retain_days_is_optional_and_checked_with_file_line_and_key() {
        assert_eq!(load("").unwrap().audit.retain_days, None);
        let c = load("[audit]\nretain_days = 2555\n").unwrap();
        assert_eq!(c.audit.retain_days, Some(2555));
        assert!(c.audit_problems().is_empty());
        for (value, why) in [("0", "at least 1"), ("99999", "at most")] {
            let c = load(&format!("[audit]\nretain_days = {value}\n")).unwrap();
            let p: Vec<String> = c.audit_problems().iter().map(|e| e.to_string()).collect();
            assert!(
                p.len() == 1
                    && p[0].contains("bridge.toml:9:")
                    && p[0].contains("audit.retain_days")
                    && p[0].contains(why),
                "{p:?}"
            );
            // `bridge run` and `config check` see it among the service problems.
            assert!(c
                .service_problems()
                .iter()
                .any(|e| e.to_string().contains("audit.retain_days")));
        }
        for bad in ["retain_days = -3", "retain_days = \"7\"", "keep_days = 7"] {
            let e = load(&format!("[audit]\n{bad}\n")).unwrap_err().to_string();
            assert!(
                e.contains("line 9") && e.contains("bridge.toml"),
                "{bad}: {e}"
            );
        }
    }
}

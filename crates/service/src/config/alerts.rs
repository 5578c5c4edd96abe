//! `[alerts]`: the operator's webhook for alerts that call for a manual
//! procedure (issue 16: consent revoked after a share).

use serde::Deserialize;

use super::{BridgeConfig, ConfigError, SecretRef};

/// As written in bridge.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// POSTed one JSON alert at a time (ids only). `https://`, or `http://`
    /// to a loopback address (a local relay).
    pub webhook_url: String,
    /// Key of the HMAC-SHA256 signature in `X-Bridge-Signature`.
    pub webhook_secret: SecretRef,
    /// First retry after a failed delivery; doubles per attempt, at most 1 h.
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_retry_secs() -> u64 {
    60
}

fn default_timeout_secs() -> u64 {
    10
}

/// The webhook with its secret read.
#[derive(Clone)]
pub struct AlertSettings {
    pub url: String,
    pub secret: Vec<u8>,
    pub retry: std::time::Duration,
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSettings")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why a webhook URL is not acceptable, if it is not.
pub fn url_problem(raw: &str) -> Option<String> {
    let Ok(url) = raw.parse::<http::Uri>() else {
        return Some(format!("`{raw}` is not a URL"));
    };
    let host = url.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme_str() {
        Some("https") if !host.is_empty() => None,
        Some("http") if loopback => None,
        Some("http") => Some(
            "alerts leave the machine: use https:// (http:// only to a loopback address)".into(),
        ),
        _ => Some(format!("`{raw}` is not an https:// URL")),
    }
}

impl BridgeConfig {
    /// Problems of `[alerts]` that need no secret.
    pub fn alert_problems(&self) -> Vec<ConfigError> {
        let Some(a) = &self.alerts else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if let Some(why) = url_problem(&a.webhook_url) {
            problems.push(self.key_error_at("alerts.webhook_url", why));
        }
        for (key, v) in [
            ("alerts.retry_secs", a.retry_secs),
            ("alerts.timeout_secs", a.timeout_secs),
        ] {
            if v == 0 {
                problems.push(self.key_error_at(key, "must be at least 1 (seconds)"));
            }
        }
        problems
    }

    /// The webhook, its secret read; `None` without `[alerts]`.
    pub fn alert_settings(&self) -> Result<Option<AlertSettings>, ConfigError> {
        let Some(a) = &self.alerts else {
            return Ok(None);
        };
        if let Some(e) = self.alert_problems().into_iter().next() {
            return Err(e);
        }
        let secret = self.secret("alerts.webhook_secret", &a.webhook_secret)?;
        if secret.trim().chars().count() < 16 {
            return Err(self.key_error(
                "alerts.webhook_secret",
                "the signing secret must have at least 16 characters",
            ));
        }
        Ok(Some(AlertSettings {
            url: a.webhook_url.clone(),
            secret: secret.trim().as_bytes().to_vec(),
            retry: std::time::Duration::from_secs(a.retry_secs),
            timeout: std::time::Duration::from_secs(a.timeout_secs),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::url_problem;

    #[test]
    fn webhooks_are_https_or_loopback() {
        assert_eq!(url_problem("https://ops.example.org/hook"), None);
        assert_eq!(url_problem("http://127.0.0.1:9000/hook"), None);
        assert_eq!(url_problem("http://[::1]:9000/hook"), None);
        assert!(url_problem("http://ops.example.org/hook").is_some());
        assert!(url_problem("ftp://x/y").is_some());
        assert!(url_problem("not a url").is_some());
    }
}

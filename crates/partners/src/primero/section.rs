//! `[primero]`: the section, its validation and the client it builds.

use std::time::Duration;

use serde::Deserialize;

use super::{PrimeroAuth, PrimeroClient, PrimeroConfig};
use crate::section::{
    default_timeout_secs, limit_problems, limits, url_problem, Resolve, SecretRef, SectionError,
};
use crate::RetryPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimeroSection {
    pub base_url: String,
    /// `basic` (default) or `v2.10-token`; see docs/operator/primero-auth.md.
    #[serde(default)]
    pub auth: PrimeroAuthMode,
    pub user_name: String,
    pub password: SecretRef,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Calls to this partner at once (all flows together).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Calls per second to this partner (all flows together).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
}

/// `primero.auth`: how the bridge proves who it is to Primero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PrimeroAuthMode {
    /// `"basic"`: HTTP Basic with a dedicated API user; every Primero v2.
    #[default]
    Basic,
    /// `"v2.10-token"`: the JWT of `POST /api/v2/tokens`; Primero v2.10 and older.
    V210Token,
}

impl PrimeroAuthMode {
    /// The value of `primero.auth` that selects this mode.
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::V210Token => "v2.10-token",
        }
    }
}

impl std::fmt::Display for PrimeroAuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.config_name())
    }
}

impl<'de> Deserialize<'de> for PrimeroAuthMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = String::deserialize(d)?;
        match value.as_str() {
            "basic" => Ok(Self::Basic),
            "v2.10-token" => Ok(Self::V210Token),
            // The old name: it promised a token that Primero v2.11+ never
            // sends; say what to use instead rather than guess.
            "token" => Err(D::Error::custom(
                "`token` is no longer an auth mode: Primero v2.11 and later have no tokens; \
                 use auth = \"basic\" with a dedicated API user (or \"v2.10-token\" for \
                 Primero v2.10 and older)",
            )),
            other => Err(D::Error::custom(format!(
                "`{other}` is not an auth mode: use \"basic\" (or \"v2.10-token\" for Primero v2.10 and older)"
            ))),
        }
    }
}

impl PrimeroSection {
    /// The section's problems that need neither a secret nor the network.
    pub fn validate(&self) -> Vec<SectionError> {
        let urls: [(&str, &String); 1] = [("primero.base_url", &self.base_url)];
        let mut problems: Vec<SectionError> = urls
            .iter()
            .filter_map(|(key, value)| url_problem(key, value))
            .collect();
        problems.extend(limit_problems(
            "primero",
            self.max_in_flight,
            self.rate_per_sec,
        ));
        problems
    }

    /// The client's settings, its secret read.
    pub fn client_config(
        &self,
        resolve: &dyn Resolve,
        retry: RetryPolicy,
    ) -> Result<PrimeroConfig, SectionError> {
        let password = resolve.secret("primero.password", &self.password)?;
        let user_name = self.user_name.clone();
        let auth = match self.auth {
            PrimeroAuthMode::Basic => PrimeroAuth::Basic {
                user_name,
                password,
            },
            PrimeroAuthMode::V210Token => PrimeroAuth::V210Token {
                user_name,
                password,
            },
        };
        let mut config = PrimeroConfig::new(&self.base_url, auth);
        config.timeout = Duration::from_secs(self.timeout_secs);
        config.retry = retry;
        config.limits = limits(self.max_in_flight, self.rate_per_sec);
        Ok(config)
    }

    /// The client.
    pub fn build(
        &self,
        resolve: &dyn Resolve,
        retry: RetryPolicy,
    ) -> Result<PrimeroClient, SectionError> {
        let config = self.client_config(resolve, retry)?;
        PrimeroClient::new(config).map_err(|e| SectionError::new("primero", e.to_string()))
    }
}

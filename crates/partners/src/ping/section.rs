//! `[ping]`: the section, its validation and the client it builds.

use std::time::Duration;

use serde::Deserialize;

use super::{PingClient, PingConfig, DEFAULT_SCOPE};
use crate::section::{
    default_timeout_secs, limit_problems, limits, url_problem, Resolve, SecretRef, SectionError,
};
use crate::RetryPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingSection {
    pub base_url: String,
    pub token_url: String,
    pub username: String,
    pub password: SecretRef,
    pub client_id: String,
    #[serde(default)]
    pub scope: Option<String>,
    pub subscription_key: SecretRef,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Calls to this partner at once (all flows together).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Calls per second to this partner (all flows together).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
}

/// The deployment's ids at PING (from the mapping folder's
/// `deployment.toml`, not from `bridge.toml`).
#[derive(Debug, Clone, Copy)]
pub struct PingIds<'a> {
    /// `deployment.partner_id`, e.g. `PNR-1363`.
    pub partner_id: Option<&'a str>,
    /// `deployment.interop_id`, e.g. `INT-1436`.
    pub interop_id: Option<&'a str>,
}

impl PingSection {
    /// The section's problems that need neither a secret nor the network.
    pub fn validate(&self) -> Vec<SectionError> {
        let urls: [(&str, &String); 2] = [
            ("ping.base_url", &self.base_url),
            ("ping.token_url", &self.token_url),
        ];
        let mut problems: Vec<SectionError> = urls
            .iter()
            .filter_map(|(key, value)| url_problem(key, value))
            .collect();
        problems.extend(limit_problems(
            "ping",
            self.max_in_flight,
            self.rate_per_sec,
        ));
        problems
    }

    /// The client's settings, its secrets read.
    pub fn client_config(
        &self,
        resolve: &dyn Resolve,
        ids: PingIds<'_>,
    ) -> Result<PingConfig, SectionError> {
        let missing = |key: &str| {
            SectionError::new(
                format!("deployment.{key}"),
                format!("the mapping folder's deployment.toml must set {key} for the PING design"),
            )
        };
        Ok(PingConfig {
            base_url: self.base_url.clone(),
            token_url: self.token_url.clone(),
            username: self.username.clone(),
            password: resolve.secret("ping.password", &self.password)?,
            client_id: self.client_id.clone(),
            scope: self
                .scope
                .clone()
                .unwrap_or_else(|| DEFAULT_SCOPE.to_string()),
            subscription_key: resolve.secret("ping.subscription_key", &self.subscription_key)?,
            partner_id: ids
                .partner_id
                .ok_or_else(|| missing("partner_id"))?
                .to_string(),
            interop_id: ids
                .interop_id
                .ok_or_else(|| missing("interop_id"))?
                .to_string(),
            timeout: Duration::from_secs(self.timeout_secs),
        })
    }

    /// The client, with the retry policy and this section's call limits.
    pub fn build(
        &self,
        resolve: &dyn Resolve,
        ids: PingIds<'_>,
        retry: RetryPolicy,
    ) -> Result<PingClient, SectionError> {
        let config = self.client_config(resolve, ids)?;
        Ok(PingClient::new(config)
            .map_err(|e| SectionError::new("ping", e.to_string()))?
            .with_retry(retry)
            .with_limits(limits(self.max_in_flight, self.rate_per_sec)))
    }
}

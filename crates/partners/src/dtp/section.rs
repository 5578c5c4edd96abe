//! `[dtp]` (design A): the section, its validation and the client it builds.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{DtpClient, DtpConfig, DtpUrls};
use crate::section::{
    default_timeout_secs, limit_problems, limits, url_problem, Resolve, SecretRef, SectionError,
};
use crate::RetryPolicy;

/// Where to post, and the mutual-TLS identity UNHCR pinned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtpSection {
    pub receive_incoming_referral_url: String,
    pub receive_decision_outgoing_referral_url: String,
    pub notification_url: String,
    /// PEM client certificate file.
    pub client_cert: PathBuf,
    /// PEM private key file of the client certificate.
    pub client_key: PathBuf,
    pub subscription_key: SecretRef,
    /// Extra trusted root (PEM file) for DTP's server certificate.
    #[serde(default)]
    pub extra_root: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Calls to this partner at once (all flows together).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Calls per second to this partner (all flows together).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
}

impl DtpSection {
    /// The section's problems that need neither a secret nor the network.
    pub fn validate(&self) -> Vec<SectionError> {
        let urls: [(&str, &String); 3] = [
            (
                "dtp.receive_incoming_referral_url",
                &self.receive_incoming_referral_url,
            ),
            (
                "dtp.receive_decision_outgoing_referral_url",
                &self.receive_decision_outgoing_referral_url,
            ),
            ("dtp.notification_url", &self.notification_url),
        ];
        let mut problems: Vec<SectionError> = urls
            .iter()
            .filter_map(|(key, value)| url_problem(key, value))
            .collect();
        problems.extend(limit_problems("dtp", self.max_in_flight, self.rate_per_sec));
        problems
    }

    /// The client's settings, its secret and certificate files read.
    pub fn client_config(&self, resolve: &dyn Resolve) -> Result<DtpConfig, SectionError> {
        let extra_root_pem = match &self.extra_root {
            Some(path) => Some(resolve.file("dtp.extra_root", path)?),
            None => None,
        };
        Ok(DtpConfig {
            urls: DtpUrls {
                receive_incoming_referral: self.receive_incoming_referral_url.clone(),
                receive_decision_outgoing_referral: self
                    .receive_decision_outgoing_referral_url
                    .clone(),
                notification: self.notification_url.clone(),
            },
            subscription_key: resolve.secret("dtp.subscription_key", &self.subscription_key)?,
            client_cert_pem: resolve.file("dtp.client_cert", &self.client_cert)?,
            client_key_pem: resolve.file("dtp.client_key", &self.client_key)?,
            extra_root_pem,
            timeout: Duration::from_secs(self.timeout_secs),
        })
    }

    /// The client, with the retry policy and this section's call limits.
    pub fn build(
        &self,
        resolve: &dyn Resolve,
        retry: RetryPolicy,
    ) -> Result<DtpClient, SectionError> {
        let config = self.client_config(resolve)?;
        Ok(DtpClient::new(config)
            .map_err(|e| SectionError::new("dtp", e.to_string()))?
            .with_retry(retry)
            .with_limits(limits(self.max_in_flight, self.rate_per_sec)))
    }
}

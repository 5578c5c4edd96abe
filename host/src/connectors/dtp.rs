//! DTP (design A) client: HTTPS POST of flat JSON bodies to per-purpose URLs,
//! with a TLS client certificate (mutual TLS) and the APIM subscription key.
//!
//! CONTRACT (stable; the transport behind it is being filled in).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::ConnectorError;

/// The DTP endpoints the bridge posts to (spec §1.A, §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtpEndpoint {
    /// Primero referral → proGres (flow 2-2), `request_type: ReceiveIncomingReferral`.
    ReceiveIncomingReferral,
    /// Primero decision on a proGres referral (flow 1-2), `ReceiveDecisionOutgoingReferral`.
    ReceiveDecisionOutgoingReferral,
    /// Delivery success/failure notifications (flows 1-3, 1-4).
    Notification,
}

impl DtpEndpoint {
    pub fn name(self) -> &'static str {
        match self {
            DtpEndpoint::ReceiveIncomingReferral => "ReceiveIncomingReferral",
            DtpEndpoint::ReceiveDecisionOutgoingReferral => "ReceiveDecisionOutgoingReferral",
            DtpEndpoint::Notification => "Notification",
        }
    }
}

/// Full URL of each endpoint (DTP had one credential per endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtpUrls {
    pub receive_incoming_referral: String,
    pub receive_decision_outgoing_referral: String,
    pub notification: String,
}

#[derive(Clone)]
pub struct DtpConfig {
    pub urls: DtpUrls,
    pub subscription_key: String,
    /// PEM client certificate (its SHA-1 thumbprint is pinned by UNHCR).
    pub client_cert_pem: Vec<u8>,
    /// PEM private key of the client certificate.
    pub client_key_pem: Vec<u8>,
    /// Extra trusted root (PEM) for the server, e.g. the simulator's own CA.
    pub extra_root_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

// Never print the key or the subscription key.
impl fmt::Debug for DtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpConfig")
            .field("urls", &self.urls)
            .field("subscription_key", &"<redacted>")
            .field("client_key_pem", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DtpConfigError {
    #[error("DTP client certificate or key is not valid PEM: {0}")]
    Identity(String),
    #[error("DTP extra root certificate is not valid PEM: {0}")]
    Root(String),
    #[error("DTP URL for {endpoint} is not valid: {url}")]
    Url { endpoint: &'static str, url: String },
    #[error("DTP HTTP client: {0}")]
    Client(String),
}

#[derive(Clone)]
pub struct DtpClient {
    #[allow(dead_code)]
    config: DtpConfig,
}

impl DtpClient {
    pub fn new(config: DtpConfig) -> Result<Self, DtpConfigError> {
        Ok(Self { config })
    }

    /// POST a JSON body; any non-2xx answer is an error (DTP bodies are not used).
    pub async fn post<B: Serialize + Sync>(
        &self,
        endpoint: DtpEndpoint,
        _body: &B,
    ) -> Result<(), ConnectorError> {
        Err(ConnectorError::Protocol {
            system: super::System::Dtp,
            endpoint: format!("POST {}", endpoint.name()),
            reason: "DTP transport not implemented yet".into(),
        })
    }
}

/// SHA-1 thumbprint of a PEM certificate, upper-case hex without separators
/// (the form operators share with UNHCR).
pub fn sha1_thumbprint(_cert_pem: &[u8]) -> Result<String, DtpConfigError> {
    Err(DtpConfigError::Identity("not implemented yet".into()))
}

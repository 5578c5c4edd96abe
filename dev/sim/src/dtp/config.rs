//! What the DTP simulator serves and expects: its endpoints, their paths, its settings.

use std::fmt;
use std::io;

use super::pki::TestPki;

/// The header DTP's API gateway (Azure API Management) reads the
/// subscription key from. Written here from DTP's documentation, not taken
/// from the client: a client that sent another header would be refused.
pub(super) const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";

/// DTP's endpoints (spec §1.A, §3.1), as the simulator serves them.
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
    /// The last segment of its path.
    pub fn name(self) -> &'static str {
        match self {
            DtpEndpoint::ReceiveIncomingReferral => "ReceiveIncomingReferral",
            DtpEndpoint::ReceiveDecisionOutgoingReferral => "ReceiveDecisionOutgoingReferral",
            DtpEndpoint::Notification => "Notification",
        }
    }
}

/// The full URL of each endpoint of a running simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtpUrls {
    pub receive_incoming_referral: String,
    pub receive_decision_outgoing_referral: String,
    pub notification: String,
}

pub const DEFAULT_BASE_PATH: &str = "/primero-uat";

/// What the simulator expects and how it serves.
#[derive(Clone)]
pub struct DtpSimConfig {
    pub subscription_key: String,
    /// CA whose client certificates are accepted.
    pub client_ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// When set, only a client certificate with this SHA-1 thumbprint
    /// (upper-case hex) is let through, as UNHCR pinned it.
    pub pinned_thumbprint: Option<String>,
    /// Path prefix of the endpoints, e.g. `/primero-uat`.
    pub base_path: String,
}

impl DtpSimConfig {
    pub fn new(pki: &TestPki) -> Self {
        Self {
            subscription_key: "sim-dtp-subscription-key".into(),
            client_ca_pem: pki.ca_cert_pem.clone(),
            server_cert_pem: pki.server_cert_pem.clone(),
            server_key_pem: pki.server_key_pem.clone(),
            pinned_thumbprint: None,
            base_path: DEFAULT_BASE_PATH.into(),
        }
    }

    pub fn path(&self, endpoint: DtpEndpoint) -> String {
        format!(
            "{}/{}",
            self.base_path.trim_end_matches('/'),
            endpoint.name()
        )
    }
}

impl fmt::Debug for DtpSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpSimConfig")
            .field("subscription_key", &"<redacted>")
            .field("pinned_thumbprint", &self.pinned_thumbprint)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DtpSimError {
    #[error("DTP simulator TLS setup: {0}")]
    Tls(String),
    #[error("DTP simulator socket: {0}")]
    Io(#[from] io::Error),
}

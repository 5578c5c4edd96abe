//! Connection settings for one PING deployment.

use std::fmt;
use std::time::Duration;

/// UAT scope of the original deployment.
pub const DEFAULT_SCOPE: &str = "https://primespingb2cuat.onmicrosoft.com/apimurls/API.Read";

/// Connection settings for one PING deployment.
#[derive(Clone)]
pub struct PingConfig {
    /// APIM base URL, e.g. `https://msawe-primes-ping-bau-uat-apimgmt.azure-api.net`.
    pub base_url: String,
    /// Full Azure AD B2C token URL (tenant and policy are deployment-specific).
    pub token_url: String,
    pub username: String,
    pub password: String,
    pub client_id: String,
    pub scope: String,
    pub subscription_key: String,
    /// e.g. `PNR-1363`; also part of the ingestion URLs.
    pub partner_id: String,
    /// e.g. `INT-1436`.
    pub interop_id: String,
    /// Per-request timeout (token and API calls alike).
    pub timeout: Duration,
}

// Hand-written so a logged config never shows the password or subscription key.
impl fmt::Debug for PingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingConfig")
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("subscription_key", &"<redacted>")
            .field("partner_id", &self.partner_id)
            .field("interop_id", &self.interop_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A configuration the client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum PingConfigError {
    #[error("PING base_url is not a valid http(s) URL")]
    BaseUrl,
    #[error("PING token_url is not a valid http(s) URL")]
    TokenUrl,
    #[error("PING subscription key cannot be sent as an HTTP header")]
    SubscriptionKey,
    #[error("HTTP client could not be built")]
    Http,
}

//! DTP (design A) client: HTTPS POST of flat JSON bodies to per-purpose URLs,
//! with a TLS client certificate (mutual TLS) and the APIM subscription key.
//!
//! Each endpoint has its own full URL (the original kept one credential per
//! endpoint). Response bodies are not used; any non-2xx answer is an error
//! naming the endpoint by purpose (`POST ReceiveIncomingReferral`), never by
//! URL, so neither a query string nor a key can reach a log.

pub mod section;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde_json::Value;
use sha1::{Digest, Sha1};

use super::limits::{cluster_scope, ClusterLimits, Limiter, PartnerLimits};
use super::retry::{self, AttemptError, CallKind, RetryPolicy};
use super::{ConnectorError, System};

/// Header carrying the Azure APIM subscription key.
pub const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
const REASON_MAX_CHARS: usize = 200;

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

impl DtpUrls {
    pub fn get(&self, endpoint: DtpEndpoint) -> &str {
        match endpoint {
            DtpEndpoint::ReceiveIncomingReferral => &self.receive_incoming_referral,
            DtpEndpoint::ReceiveDecisionOutgoingReferral => {
                &self.receive_decision_outgoing_referral
            }
            DtpEndpoint::Notification => &self.notification,
        }
    }
}

const ENDPOINTS: [DtpEndpoint; 3] = [
    DtpEndpoint::ReceiveIncomingReferral,
    DtpEndpoint::ReceiveDecisionOutgoingReferral,
    DtpEndpoint::Notification,
];

/// DTP client. Clones share the HTTP pool and the limits.
#[derive(Clone)]
pub struct DtpClient {
    http: reqwest::Client,
    subscription_key: HeaderValue,
    config: DtpConfig,
    retry: RetryPolicy,
    limiter: Arc<Limiter>,
    /// Dry run: every post is refused before it is sent.
    read_only: bool,
}

impl fmt::Debug for DtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DtpClient {
    pub fn new(config: DtpConfig) -> Result<Self, DtpConfigError> {
        for endpoint in ENDPOINTS {
            let url = config.urls.get(endpoint);
            // A client certificate only means something over TLS.
            let valid = url::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.has_host());
            if !valid {
                return Err(DtpConfigError::Url {
                    endpoint: endpoint.name(),
                    url: url_without_query(url),
                });
            }
        }
        let identity = identity(&config.client_cert_pem, &config.client_key_pem)?;
        let mut subscription_key =
            HeaderValue::from_str(&config.subscription_key).map_err(|_| {
                DtpConfigError::Client("the subscription key is not a valid header value".into())
            })?;
        subscription_key.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .identity(identity)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)));
        if let Some(root) = &config.extra_root_pem {
            let certs = pem_certificates(root).map_err(DtpConfigError::Root)?;
            for der in certs {
                let cert = reqwest::Certificate::from_der(&der)
                    .map_err(|_| DtpConfigError::Root("certificate is not valid DER".into()))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DtpConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            subscription_key,
            config,
            retry: RetryPolicy::default(),
            limiter: Arc::new(Limiter::new(PartnerLimits::default())),
            read_only: false,
        })
    }

    /// Replace the retry policy (default: [`RetryPolicy::default`]). Every
    /// DTP call is a POST, so it is retried only when surely not processed
    /// (connection not made, 429, 503).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A client that refuses every post before it is sent. For dry runs.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Replace the concurrency and rate limits (default: [`PartnerLimits::default`]).
    pub fn with_limits(mut self, limits: PartnerLimits) -> Self {
        self.limiter = Arc::new(Limiter::new(limits).with_cluster_of(&self.limiter));
        self
    }

    /// Hold the limits for every replica sharing `shared` (the state
    /// database), per DTP gateway (`dtp <origin of the endpoint URLs>`).
    /// Clones made before keep the limiter they had.
    pub fn with_cluster_limits(mut self, shared: Arc<dyn ClusterLimits>) -> Self {
        let urls: Vec<url::Url> = ENDPOINTS
            .iter()
            .filter_map(|e| url::Url::parse(self.config.urls.get(*e)).ok())
            .collect();
        let mut limiter = Limiter::new(*self.limiter.limits());
        limiter.set_cluster(
            shared,
            "dtp",
            cluster_scope("dtp", &urls, false),
            self.config.timeout,
        );
        self.limiter = Arc::new(limiter);
        self
    }

    /// The call limiter (its cluster scope, when shared).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn limits(&self) -> &PartnerLimits {
        self.limiter.limits()
    }

    pub fn urls(&self) -> &DtpUrls {
        &self.config.urls
    }

    /// POST a JSON body; any non-2xx answer is an error (DTP bodies are not
    /// used). Retried per the policy as a non-idempotent call.
    pub async fn post<B: Serialize + Sync>(
        &self,
        endpoint: DtpEndpoint,
        body: &B,
    ) -> Result<(), ConnectorError> {
        let endpoint_name = format!("POST {}", endpoint.name());
        let payload = serde_json::to_vec(body).map_err(|_| ConnectorError::Protocol {
            system: System::Dtp,
            endpoint: endpoint_name.clone(),
            reason: "request body could not be encoded".to_string(),
        })?;
        retry::run(
            &self.retry,
            "dtp",
            &endpoint_name,
            CallKind::NonIdempotent,
            Some(&self.limiter),
            || self.post_once(endpoint, &endpoint_name, &payload),
        )
        .await
    }

    async fn post_once(
        &self,
        endpoint: DtpEndpoint,
        endpoint_name: &str,
        payload: &[u8],
    ) -> Result<(), AttemptError> {
        // Every DTP call is a write.
        super::guard(
            self.read_only,
            super::Effect::Write,
            System::Dtp,
            endpoint_name,
        )
        .map_err(AttemptError::Final)?;
        let _permit = self.limiter.acquire().await;
        let response = self
            .http
            .post(self.config.urls.get(endpoint))
            .header(SUBSCRIPTION_KEY_HEADER, self.subscription_key.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| ConnectorError::transport(System::Dtp, endpoint_name, &e))?;
        let status = response.status();
        if status.is_success() {
            tracing::debug!(
                endpoint = endpoint.name(),
                status = status.as_u16(),
                "DTP accepted"
            );
            return Ok(());
        }
        let retry_after = parse_retry_after(response.headers());
        // The body is only read for APIM's short `message`; a read failure
        // must not hide the status.
        let bytes = response.bytes().await.unwrap_or_default();
        let reason = self.scrub(&error_reason(&bytes, status));
        Err(AttemptError::Call(ConnectorError::Status {
            system: System::Dtp,
            endpoint: endpoint_name.to_string(),
            status: status.as_u16(),
            reason,
            retry_after,
        }))
    }

    /// A harmless `GET` of an endpoint's URL with the client certificate and
    /// the subscription key: the TLS handshake (mutual) happens as for a
    /// post, but nothing is sent. DTP's endpoints take only POST, so any HTTP
    /// answer (typically 404 or 405) means the connection and the
    /// certificate were accepted. One attempt, no retry. Returns the status
    /// and the gateway's short message.
    pub async fn probe(&self, endpoint: DtpEndpoint) -> Result<(u16, String), ConnectorError> {
        let endpoint_name = format!("GET {}", endpoint.name());
        let _permit = self.limiter.acquire().await;
        let response = self
            .http
            .get(self.config.urls.get(endpoint))
            .header(SUBSCRIPTION_KEY_HEADER, self.subscription_key.clone())
            .send()
            .await
            .map_err(|e| ConnectorError::transport(System::Dtp, &endpoint_name, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        Ok((status.as_u16(), self.scrub(&error_reason(&bytes, status))))
    }

    /// A partner message must never echo the subscription key into our errors.
    fn scrub(&self, text: &str) -> String {
        let key = &self.config.subscription_key;
        if key.len() >= 4 {
            text.replace(key.as_str(), "<redacted>")
        } else {
            text.to_string()
        }
    }
}

/// SHA-1 thumbprint of a PEM certificate, upper-case hex without separators
/// (the form operators share with UNHCR).
pub fn sha1_thumbprint(cert_pem: &[u8]) -> Result<String, DtpConfigError> {
    let certs = pem_certificates(cert_pem).map_err(DtpConfigError::Identity)?;
    Ok(der_thumbprint(&certs[0]))
}

/// SHA-1 thumbprint of a DER certificate, upper-case hex.
pub fn der_thumbprint(der: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(der))
}

/// The `CERTIFICATE` blocks of a PEM text (at least one).
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// Check the certificate and key separately (clearer errors than reqwest's),
/// then build the identity from both.
fn identity(cert_pem: &[u8], key_pem: &[u8]) -> Result<reqwest::Identity, DtpConfigError> {
    pem_certificates(cert_pem)
        .map_err(|e| DtpConfigError::Identity(format!("client certificate: {e}")))?;
    // The key's own error text could quote key bytes: say only what is wrong.
    PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        DtpConfigError::Identity("client key: no PKCS#8, PKCS#1 or SEC1 private key block".into())
    })?;
    let mut both = cert_pem.to_vec();
    if !both.ends_with(b"\n") {
        both.push(b'\n');
    }
    both.extend_from_slice(key_pem);
    reqwest::Identity::from_pem(&both).map_err(|_| {
        DtpConfigError::Identity("client certificate and key cannot be used together".into())
    })
}

fn url_without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

/// APIM's short `message`, else the HTTP reason phrase.
fn error_reason(bytes: &[u8], status: reqwest::StatusCode) -> String {
    let message = serde_json::from_slice::<Value>(bytes).ok().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    });
    let text = message.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    });
    match text.char_indices().nth(REASON_MAX_CHARS) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text,
    }
}

fn parse_retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_sim::dtp::TestPki;

    fn config(pki: &TestPki) -> DtpConfig {
        DtpConfig {
            urls: DtpUrls {
                receive_incoming_referral: "https://127.0.0.1:1/a".into(),
                receive_decision_outgoing_referral: "https://127.0.0.1:1/b".into(),
                notification: "https://127.0.0.1:1/c".into(),
            },
            subscription_key: "k".into(),
            client_cert_pem: pki.client_cert_pem.clone().into_bytes(),
            client_key_pem: pki.client_key_pem.clone().into_bytes(),
            extra_root_pem: Some(pki.ca_cert_pem.clone().into_bytes()),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn thumbprint_is_sha1_of_der_upper_hex() {
        let pki = TestPki::generate();
        let der = pem_certificates(pki.client_cert_pem.as_bytes()).unwrap();
        let thumb = sha1_thumbprint(pki.client_cert_pem.as_bytes()).unwrap();
        assert_eq!(thumb.len(), 40);
        assert_eq!(thumb, thumb.to_uppercase());
        assert_eq!(thumb, hex::encode_upper(Sha1::digest(&der[0])));
        assert!(sha1_thumbprint(b"not a certificate").is_err());
        // A key is not a certificate.
        assert!(sha1_thumbprint(pki.client_key_pem.as_bytes()).is_err());
    }

    #[test]
    fn config_errors_name_the_problem_without_secrets() {
        let pki = TestPki::generate();
        assert!(DtpClient::new(config(&pki)).is_ok());

        let mut c = config(&pki);
        c.urls.notification = "http://127.0.0.1:1/c?key=secret".into();
        let e = DtpClient::new(c).unwrap_err().to_string();
        assert!(e.contains("Notification") && !e.contains("secret"), "{e}");

        let mut c = config(&pki);
        c.client_key_pem = b"-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n".to_vec();
        let e = DtpClient::new(c).unwrap_err().to_string();
        assert!(e.contains("client key"), "{e}");

        let mut c = config(&pki);
        c.extra_root_pem = Some(b"garbage".to_vec());
        assert!(matches!(DtpClient::new(c), Err(DtpConfigError::Root(_))));

        let debug = format!("{:?}", config(&pki));
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn error_reason_is_short_and_falls_back() {
        let s = reqwest::StatusCode::UNAUTHORIZED;
        assert_eq!(
            error_reason(br#"{"statusCode":401,"message":"Access denied"}"#, s),
            "Access denied"
        );
        assert_eq!(error_reason(b"<html>", s), "Unauthorized");
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(500));
        assert!(error_reason(long.as_bytes(), s).chars().count() <= REASON_MAX_CHARS + 1);
    }
}

//! The client: construction, URLs, and the transport every API call goes
//! through (retry, limits, one fresh login on a 401, scrubbing secrets).

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use tokio::sync::Mutex;

use super::auth::TokenState;
use super::config::{PingConfig, PingConfigError};
use super::errors::{error_reason, parse_retry_after};
use std::sync::Arc;

use crate::limits::{cluster_scope, ClusterLimits, Limiter, PartnerLimits};
use crate::retry::{self, AttemptError, CallKind, RetryPolicy};
use crate::{ConnectorError, Effect, System};

const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";

/// PING client. Cheap to share behind an `Arc`; the token is cached and
/// refreshed by whichever call first finds it stale, the others wait for it.
pub struct PingClient {
    pub(super) http: reqwest::Client,
    /// Listing pages (thousands of rows, megabytes) go over a connection of
    /// their own: the large read buffer a page leaves on a connection stays
    /// on that one instead of on each pooled connection in turn.
    pages_http: reqwest::Client,
    pub(super) config: PingConfig,
    base: url::Url,
    pub(super) token_endpoint: String,
    subscription_key: HeaderValue,
    pub(super) token: Mutex<TokenState>,
    pub(super) retry: RetryPolicy,
    limiter: Limiter,
    /// Dry run: ingestion is refused before it is sent.
    read_only: bool,
}

impl fmt::Debug for PingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PingClient {
    pub fn new(config: PingConfig) -> Result<Self, PingConfigError> {
        let base = parse_http_url(&config.base_url).ok_or(PingConfigError::BaseUrl)?;
        let token_url = parse_http_url(&config.token_url).ok_or(PingConfigError::TokenUrl)?;
        let mut subscription_key = HeaderValue::from_str(&config.subscription_key)
            .map_err(|_| PingConfigError::SubscriptionKey)?;
        subscription_key.set_sensitive(true);
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        };
        let http = builder().build().map_err(|_| PingConfigError::Http)?;
        let pages_http = builder()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|_| PingConfigError::Http)?;
        Ok(Self {
            http,
            pages_http,
            base,
            token_endpoint: format!("POST {}", token_url.path()),
            subscription_key,
            config,
            token: Mutex::new(TokenState::default()),
            retry: RetryPolicy::default(),
            limiter: Limiter::new(PartnerLimits::default()),
            read_only: false,
        })
    }

    /// Replace the retry policy (default: [`RetryPolicy::default`]). Retrieve
    /// and check status are retried on any transient error, ingestion only
    /// when surely not processed; the token call like an idempotent call.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A client that refuses every write (ingestion) before it is sent:
    /// retrieve and check status still work. For dry runs.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Replace the concurrency and rate limits (default: [`PartnerLimits::default`]).
    pub fn with_limits(mut self, limits: PartnerLimits) -> Self {
        self.limiter = Limiter::new(limits).with_cluster_of(&self.limiter);
        self
    }

    /// Hold the limits for every replica sharing `shared` (the state
    /// database), per PING server (`ping <base URL>`).
    pub fn with_cluster_limits(mut self, shared: Arc<dyn ClusterLimits>) -> Self {
        let scope = cluster_scope("ping", [&self.base], true);
        self.limiter
            .set_cluster(shared, "ping", scope, self.config.timeout);
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

    pub fn config(&self) -> &PingConfig {
        &self.config
    }

    pub(super) fn url_for(&self, paths: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            for path in paths {
                segments.extend(path.split('/').filter(|s| !s.is_empty()));
            }
        }
        url
    }

    pub(super) fn ingestion_url(&self, last: &str) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            // `push` percent-encodes the partner id, should it hold odd characters.
            segments
                .pop_if_empty()
                .extend(["api", "ingestion", "v2"])
                .push(&self.config.partner_id)
                .push(last);
        }
        url
    }

    /// POST a JSON body with the PING headers, retried per the policy and
    /// `kind`; in each attempt a 401 gets one fresh login and one more try.
    /// Returns the 2xx body.
    pub(super) async fn post_api<B: Serialize + ?Sized>(
        &self,
        url: url::Url,
        endpoint: &str,
        body: &B,
        kind: CallKind,
        effect: Effect,
    ) -> Result<Vec<u8>, ConnectorError> {
        self.post_api_on(false, url, endpoint, body, (kind, effect))
            .await
    }

    /// [`post_api`](Self::post_api); `page`: a listing page, sent over the
    /// listings' own connection.
    pub(super) async fn post_api_on<B: Serialize + ?Sized>(
        &self,
        page: bool,
        url: url::Url,
        endpoint: &str,
        body: &B,
        (kind, effect): (CallKind, Effect),
    ) -> Result<Vec<u8>, ConnectorError> {
        crate::guard(self.read_only, effect, System::Ping, endpoint)?;
        let payload = encode(body, endpoint)?;
        retry::run(
            &self.retry,
            "ping",
            endpoint,
            kind,
            Some(&self.limiter),
            || self.post_once(page, &url, endpoint, &payload),
        )
        .await
    }

    /// One POST of `payload` with the bearer token and subscription key.
    async fn send(
        &self,
        http: &reqwest::Client,
        url: &url::Url,
        token: &str,
        payload: &[u8],
        endpoint: &str,
    ) -> Result<reqwest::Response, ConnectorError> {
        http.post(url.clone())
            .bearer_auth(token)
            .header(SUBSCRIPTION_KEY_HEADER, self.subscription_key.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| ConnectorError::transport(System::Ping, endpoint, &e))
    }

    /// One attempt of [`post_api`](Self::post_api). Token failures are final
    /// here: the token call has its own retries.
    async fn post_once(
        &self,
        page: bool,
        url: &url::Url,
        endpoint: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, AttemptError> {
        let http = if page { &self.pages_http } else { &self.http };
        let mut rejected: Option<u64> = None;
        loop {
            let (token, generation) = self.bearer(rejected).await.map_err(AttemptError::Final)?;
            let (status, retry_after, bytes) = {
                let _permit = self.limiter.acquire().await;
                let response = self.send(http, url, &token, payload, endpoint).await?;
                let status = response.status();
                let retry_after = parse_retry_after(response.headers());
                if status == reqwest::StatusCode::UNAUTHORIZED && rejected.is_none() {
                    (status, retry_after, Default::default())
                } else {
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| ConnectorError::transport(System::Ping, endpoint, &e))?;
                    (status, retry_after, bytes)
                }
            };
            if status == reqwest::StatusCode::UNAUTHORIZED && rejected.is_none() {
                // Token revoked or expired early on the server: one fresh login.
                tracing::debug!(endpoint, "PING answered 401; logging in again");
                rejected = Some(generation);
                continue;
            }
            if !status.is_success() {
                return Err(AttemptError::Call(ConnectorError::Status {
                    system: System::Ping,
                    endpoint: endpoint.to_string(),
                    status: status.as_u16(),
                    reason: self.scrub(&error_reason(&bytes, status)),
                    retry_after,
                }));
            }
            // Without a copy when the body is the sole owner of its buffer (a
            // 5,000-row page is megabytes).
            return Ok(Vec::from(bytes));
        }
    }

    /// POST for a listing page, read as it arrives: `parse` (on a blocking
    /// thread) reads the answer from the network a chunk at a time, so a
    /// page of thousands of rows is never held whole (the parsed rows are
    /// what it keeps). Retried like [`post_api`](Self::post_api); an answer
    /// `parse` refuses is a protocol error, not retried.
    pub(super) async fn post_streamed<B, T, P>(
        &self,
        url: url::Url,
        endpoint: &str,
        body: &B,
        parse: P,
    ) -> Result<T, ConnectorError>
    where
        B: Serialize + ?Sized,
        T: Send + 'static,
        P: Fn(ChunkReader) -> Result<T, String> + Clone + Send + 'static,
    {
        let payload = encode(body, endpoint)?;
        retry::run(
            &self.retry,
            "ping",
            endpoint,
            CallKind::Idempotent,
            Some(&self.limiter),
            || self.post_streamed_once(&url, endpoint, &payload, parse.clone()),
        )
        .await
    }

    async fn post_streamed_once<T, P>(
        &self,
        url: &url::Url,
        endpoint: &str,
        payload: &[u8],
        parse: P,
    ) -> Result<T, AttemptError>
    where
        T: Send + 'static,
        P: FnOnce(ChunkReader) -> Result<T, String> + Send + 'static,
    {
        let mut rejected: Option<u64> = None;
        loop {
            let (token, generation) = self.bearer(rejected).await.map_err(AttemptError::Final)?;
            let _permit = self.limiter.acquire().await;
            let mut response = self
                .send(&self.pages_http, url, &token, payload, endpoint)
                .await?;
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && rejected.is_none() {
                tracing::debug!(endpoint, "PING answered 401; logging in again");
                rejected = Some(generation);
                continue;
            }
            if !status.is_success() {
                let retry_after = parse_retry_after(response.headers());
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| ConnectorError::transport(System::Ping, endpoint, &e))?;
                return Err(AttemptError::Call(ConnectorError::Status {
                    system: System::Ping,
                    endpoint: endpoint.to_string(),
                    status: status.as_u16(),
                    reason: self.scrub(&error_reason(&bytes, status)),
                    retry_after,
                }));
            }
            // One chunk queued at most: the parser keeps up, and a chunk may be
            // hundreds of kilobytes.
            let (chunks, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
            let parser = tokio::task::spawn_blocking(move || {
                parse(ChunkReader {
                    rx,
                    chunk: Vec::new(),
                    at: 0,
                })
            });
            let mut broken = None;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        // The parser stopped early: it has said why.
                        if chunks.send(chunk.to_vec()).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(ConnectorError::transport(System::Ping, endpoint, &e));
                        break;
                    }
                }
            }
            drop(chunks);
            let parsed = parser.await;
            if let Some(e) = broken {
                return Err(AttemptError::Call(e));
            }
            return match parsed {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(reason)) => Err(AttemptError::Final(ConnectorError::Protocol {
                    system: System::Ping,
                    endpoint: endpoint.to_string(),
                    reason: self.scrub(&reason),
                })),
                Err(_) => Err(AttemptError::Final(ConnectorError::Protocol {
                    system: System::Ping,
                    endpoint: endpoint.to_string(),
                    reason: "the answer's reader stopped".to_string(),
                })),
            };
        }
    }

    /// Belt and braces: a partner message must never echo a secret into our errors.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in [&self.config.password, &self.config.subscription_key] {
            if secret.len() >= 4 {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }
}

/// An answer's body as it arrives, for a parser on a blocking thread.
pub(super) struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn parse_http_url(text: &str) -> Option<url::Url> {
    let url = url::Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.has_host()).then_some(url)
}

/// A request body as JSON; its encoding failing is a protocol error.
fn encode<B: Serialize + ?Sized>(body: &B, endpoint: &str) -> Result<Vec<u8>, ConnectorError> {
    serde_json::to_vec(body).map_err(|_| ConnectorError::Protocol {
        system: System::Ping,
        endpoint: endpoint.to_string(),
        reason: "request body could not be encoded".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ping::{DEFAULT_SCOPE, RETRIEVE_PATH};

    fn config() -> PingConfig {
        PingConfig {
            base_url: "http://127.0.0.1:9".into(),
            token_url: "http://127.0.0.1:9/oauth2/v2.0/token".into(),
            username: "svc-user".into(),
            password: "hunter2-very-secret".into(),
            client_id: "client".into(),
            scope: DEFAULT_SCOPE.into(),
            subscription_key: "sub-key-0123456789".into(),
            partner_id: "PNR-1363".into(),
            interop_id: "INT-1436".into(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let client = PingClient::new(config()).unwrap();
        for text in [format!("{:?}", config()), format!("{client:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("sub-key-0123456789"), "{text}");
            assert!(text.contains("PNR-1363"));
        }
    }

    #[test]
    fn rejects_bad_urls() {
        let mut c = config();
        c.base_url = "not a url".into();
        assert!(matches!(PingClient::new(c), Err(PingConfigError::BaseUrl)));
        let mut c = config();
        c.token_url = "ftp://127.0.0.1/x".into();
        assert!(matches!(PingClient::new(c), Err(PingConfigError::TokenUrl)));
    }

    #[test]
    fn urls_keep_base_path_and_encode_partner() {
        let mut c = config();
        c.base_url = "http://127.0.0.1:9/prefix/".into();
        c.partner_id = "PNR 1".into();
        let client = PingClient::new(c).unwrap();
        assert_eq!(
            client.url_for(&[RETRIEVE_PATH]).as_str(),
            "http://127.0.0.1:9/prefix/primes/fetch/paging/v3/retrievedatawithpaging"
        );
        assert_eq!(
            client.ingestion_url("data").as_str(),
            "http://127.0.0.1:9/prefix/api/ingestion/v2/PNR%201/data"
        );
    }
}

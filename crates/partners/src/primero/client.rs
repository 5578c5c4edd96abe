//! The client: construction, and the transport every call goes through
//! (retry, limits, auth per attempt, status mapping).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::auth::TokenState;
use super::config::{PrimeroAuth, PrimeroConfig, PrimeroConfigError};
use super::errors::check_status;
use crate::limits::{cluster_scope, ClusterLimits, Limiter};
use crate::retry::{self, AttemptError, CallKind};
use crate::{ConnectorError, System};

pub(super) struct Inner {
    pub(super) http: reqwest::Client,
    base: url::Url,
    pub(super) config: PrimeroConfig,
    /// Precomputed `Basic …` header (Basic mode only).
    pub(super) basic: Option<HeaderValue>,
    pub(super) token: Mutex<TokenState>,
    limiter: Limiter,
}

/// Primero client. Clones share the HTTP pool and the token; concurrent
/// calls that find the token stale wait for one login instead of each
/// logging in.
#[derive(Clone)]
pub struct PrimeroClient {
    pub(super) inner: Arc<Inner>,
    /// Dry run: every call but a GET (and the login) is refused before it
    /// is sent.
    read_only: bool,
}

impl fmt::Debug for PrimeroClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimeroClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A successful answer.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl PrimeroClient {
    pub fn new(config: PrimeroConfig) -> Result<Self, PrimeroConfigError> {
        let base = url::Url::parse(&config.base_url).map_err(|_| PrimeroConfigError::BaseUrl)?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(PrimeroConfigError::BaseUrl);
        }
        let basic = match &config.auth {
            PrimeroAuth::Basic {
                user_name,
                password,
            } => {
                use base64::Engine;
                let raw = format!("{user_name}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut header = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| PrimeroConfigError::Credentials)?;
                header.set_sensitive(true);
                Some(header)
            }
            PrimeroAuth::V210Token { .. } => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|_| PrimeroConfigError::Http)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                limiter: Limiter::new(config.limits),
                config,
                basic,
                token: Mutex::new(TokenState::default()),
            }),
            read_only: false,
        })
    }

    /// A client that refuses every write (anything but GET; the token
    /// login still works) before it is sent. For dry runs.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn config(&self) -> &PrimeroConfig {
        &self.inner.config
    }

    /// Hold the limits (`config.limits`) for every replica sharing `shared`
    /// (the state database), per Primero server (`primero <base URL>`).
    /// Clones made before keep the limiter they had (and their token).
    pub fn with_cluster_limits(mut self, shared: Arc<dyn ClusterLimits>) -> Self {
        let scope = cluster_scope("primero", [&self.inner.base], true);
        let timeout = self.inner.config.timeout;
        if Arc::get_mut(&mut self.inner).is_none() {
            let inner = &self.inner;
            self.inner = Arc::new(Inner {
                http: inner.http.clone(),
                base: inner.base.clone(),
                config: inner.config.clone(),
                basic: inner.basic.clone(),
                token: Mutex::new(TokenState::default()),
                limiter: Limiter::new(inner.config.limits),
            });
        }
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.limiter.set_cluster(shared, "primero", scope, timeout);
        }
        self
    }

    /// The call limiter (its cluster scope, when shared).
    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    pub(super) fn url(&self, segments: &[&str], query: &[(String, String)]) -> url::Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `push` percent-encodes ids, should they hold odd characters.
            path.pop_if_empty().extend(["api", "v2"]).extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One API call: retried per [`RetryPolicy`] (a GET on any transient
    /// error, a POST/PATCH only when surely not processed); each attempt
    /// authenticates, logs in again once on a 401 in token mode, and maps
    /// the status. Returns only 2xx answers.
    pub(super) async fn call(
        &self,
        method: Method,
        endpoint: &'static str,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ConnectorError> {
        let effect = if method == Method::GET {
            crate::Effect::Read
        } else {
            crate::Effect::Write
        };
        crate::guard(self.read_only, effect, System::Primero, endpoint)?;
        let url = self.url(segments, query);
        let span = tracing::debug_span!(
            "primero_call",
            endpoint,
            status = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty
        );
        async move {
            let started = Instant::now();
            let result = retry::run(
                &self.inner.config.retry,
                "primero",
                endpoint,
                CallKind::of_method(&method),
                Some(&self.inner.limiter),
                || self.attempt(&method, endpoint, &url, body.as_deref()),
            )
            .await;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let span = tracing::Span::current();
            let status = match &result {
                Ok(answer) => Some(answer.status.as_u16()),
                Err(err) => err.status(),
            };
            if let Some(status) = status {
                span.record("status", status);
            }
            span.record("elapsed_ms", elapsed_ms);
            tracing::debug!(status, elapsed_ms, "Primero call done");
            result
        }
        .instrument(span)
        .await
    }

    /// One attempt of [`call`](Self::call). Login failures are final here:
    /// the login has its own retries.
    async fn attempt(
        &self,
        method: &Method,
        endpoint: &'static str,
        url: &url::Url,
        body: Option<&[u8]>,
    ) -> Result<Answer, AttemptError> {
        let mut auth = self.attempt_auth(None).await.map_err(AttemptError::Final)?;
        let mut retried = false;
        loop {
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, auth.header.clone());
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let answer = {
                let _permit = self.inner.limiter.acquire().await;
                send(request, endpoint).await?
            };
            if answer.status == StatusCode::UNAUTHORIZED && !retried {
                if let Some(generation) = auth.generation {
                    // The token expired or was revoked: log in again once.
                    retried = true;
                    tracing::debug!("Primero token refused; logging in again");
                    auth = self
                        .attempt_auth(Some(generation))
                        .await
                        .map_err(AttemptError::Final)?;
                    continue;
                }
            }
            return Ok(check_status(endpoint, answer)?);
        }
    }
}

pub(super) async fn send(
    request: reqwest::RequestBuilder,
    endpoint: &str,
) -> Result<Answer, ConnectorError> {
    let response = request
        .send()
        .await
        .map_err(|e| ConnectorError::transport(System::Primero, endpoint, &e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| ConnectorError::transport(System::Primero, endpoint, &e))?
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

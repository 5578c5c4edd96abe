//! The access token: obtained from the B2C token service, cached, refreshed
//! before it expires and once more on a 401.

use std::time::{Duration, Instant};

use reqwest::header::COOKIE;

use super::client::PingClient;
use super::errors::{error_reason, parse_retry_after};
use super::wire::TokenResponse;
use crate::retry::{self, AttemptError, CallKind};
use crate::{ConnectorError, System};

/// Used when the token service sends no `expires_in`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

struct CachedToken {
    access_token: String,
    /// Which login produced it, so a 401 only invalidates the token it was sent with.
    generation: u64,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
pub(super) struct TokenState {
    current: Option<CachedToken>,
    logins: u64,
}

/// How long before expiry a token is replaced: min(60 s, expires_in / 10).
pub fn refresh_margin(expires_in: Duration) -> Duration {
    (expires_in / 10).min(Duration::from_secs(60))
}

impl PingClient {
    /// Obtain (or reuse) the access token without calling the API: tells a
    /// token-service problem apart from an API one.
    pub async fn authenticate(&self) -> Result<(), ConnectorError> {
        self.bearer(None).await.map(|_| ())
    }

    /// A usable access token and its generation. `rejected` names a generation
    /// the server refused; a newer cached token is still used.
    pub(super) async fn bearer(
        &self,
        rejected: Option<u64>,
    ) -> Result<(String, u64), ConnectorError> {
        let mut state = self.token.lock().await;
        let now = Instant::now();
        if let Some(tok) = &state.current {
            if Some(tok.generation) != rejected && now < tok.refresh_at {
                return Ok((tok.access_token.clone(), tok.generation));
            }
        }
        match self.login().await {
            Ok((access_token, ttl, started)) => {
                state.logins += 1;
                let generation = state.logins;
                state.current = Some(CachedToken {
                    access_token: access_token.clone(),
                    generation,
                    // Counted from before the request, so never later than the server's clock.
                    refresh_at: started + ttl.saturating_sub(refresh_margin(ttl)),
                    expires_at: started + ttl,
                });
                Ok((access_token, generation))
            }
            Err(err) => {
                // A refresh inside the margin may fail transiently; the old
                // token is still good until it expires.
                if let Some(tok) = &state.current {
                    if Some(tok.generation) != rejected && Instant::now() < tok.expires_at {
                        tracing::warn!("PING token refresh failed; using the current token");
                        return Ok((tok.access_token.clone(), tok.generation));
                    }
                }
                state.current = None;
                Err(err)
            }
        }
    }

    /// The token call, retried like an idempotent call.
    async fn login(&self) -> Result<(String, Duration, Instant), ConnectorError> {
        retry::run(
            &self.retry,
            "ping",
            &self.token_endpoint,
            CallKind::Idempotent,
            None,
            || async { self.login_once().await.map_err(AttemptError::Call) },
        )
        .await
    }

    async fn login_once(&self) -> Result<(String, Duration, Instant), ConnectorError> {
        let endpoint = self.token_endpoint.as_str();
        let started = Instant::now();
        let form = [
            ("username", self.config.username.as_str()),
            ("password", self.config.password.as_str()),
            ("grant_type", "password"),
            ("scope", self.config.scope.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("response_type", "token"),
        ];
        let response = self
            .http
            .post(&self.config.token_url)
            // Pins the B2C geography, as the original did.
            .header(COOKIE, "x-ms-cpim-geo=EU")
            .form(&form)
            .send()
            .await
            .map_err(|e| ConnectorError::transport(System::PingToken, endpoint, &e))?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ConnectorError::transport(System::PingToken, endpoint, &e))?;
        if !status.is_success() {
            let reason = self.scrub(&error_reason(&bytes, status));
            let code = status.as_u16();
            return Err(if matches!(code, 400 | 401 | 403) {
                ConnectorError::Auth {
                    system: System::PingToken,
                    endpoint: endpoint.to_string(),
                    reason: format!("HTTP {code}: {reason}"),
                }
            } else {
                ConnectorError::Status {
                    system: System::PingToken,
                    endpoint: endpoint.to_string(),
                    status: code,
                    reason,
                    retry_after,
                }
            });
        }
        let protocol = |reason: &str| ConnectorError::Protocol {
            system: System::PingToken,
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        let token: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| protocol("token response is not the expected JSON"))?;
        if token.access_token.is_empty() {
            return Err(protocol("token response has an empty access_token"));
        }
        let ttl = token
            .expires_in
            .and_then(|e| e.seconds())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_TTL);
        tracing::debug!(expires_in = ttl.as_secs(), "PING token obtained");
        Ok((token.access_token, ttl, started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_is_min_of_60s_and_a_tenth() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }
}

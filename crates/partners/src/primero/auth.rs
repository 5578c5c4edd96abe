//! Authentication: Basic, or a v2.10 token from `POST /api/v2/tokens`,
//! refreshed before it expires and once more on a 401.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::Instrument;

use super::client::{send, PrimeroClient};
use super::config::{refresh_margin, PrimeroAuth};
use super::errors::{check_status, error_reason};
use super::wire::{LoginRequest, LoginUser};
use crate::retry::{self, AttemptError, CallKind};
use crate::{ConnectorError, System};

const EP_TOKENS: &str = "POST /api/v2/tokens";

struct CachedToken {
    header: HeaderValue,
    /// Which login produced it, so a 401 only invalidates the token it was sent with.
    generation: u64,
    refresh_at: Instant,
}

#[derive(Default)]
pub(super) struct TokenState {
    current: Option<CachedToken>,
    generation: u64,
}

/// Auth attached to one attempt; `generation` is set for bearer tokens.
pub(super) struct AttemptAuth {
    pub(super) header: HeaderValue,
    pub(super) generation: Option<u64>,
}

impl PrimeroClient {
    /// Log in ahead (token mode; nothing to do with Basic), so the first
    /// call that needs the token does not wait for the login. A failure is
    /// returned, and the next call logs in again.
    pub async fn authenticate(&self) -> Result<(), ConnectorError> {
        self.attempt_auth(None).await.map(|_| ())
    }

    /// The `Authorization` header for the next attempt. In token mode, logs
    /// in when there is no token, when it is due for refresh, or when
    /// `refused` names the generation a 401 was answered to.
    pub(super) async fn attempt_auth(
        &self,
        refused: Option<u64>,
    ) -> Result<AttemptAuth, ConnectorError> {
        let (user_name, password) = match &self.inner.config.auth {
            PrimeroAuth::Basic { .. } => {
                let header = self
                    .inner
                    .basic
                    .clone()
                    .ok_or_else(|| ConnectorError::Auth {
                        system: System::Primero,
                        endpoint: EP_TOKENS.to_string(),
                        reason: "basic credentials missing".to_string(),
                    })?;
                return Ok(AttemptAuth {
                    header,
                    generation: None,
                });
            }
            PrimeroAuth::V210Token {
                user_name,
                password,
            } => (user_name, password),
        };
        // Held across the login so concurrent callers wait for one login.
        let mut state = self.inner.token.lock().await;
        if let Some(current) = &state.current {
            let fresh = Instant::now() < current.refresh_at;
            if fresh && refused != Some(current.generation) {
                return Ok(AttemptAuth {
                    header: current.header.clone(),
                    generation: Some(current.generation),
                });
            }
        }
        state.current = None;
        let obtained = Instant::now();
        let token = self.login(user_name, password).await?;
        let mut header = token.header;
        header.set_sensitive(true);
        state.generation += 1;
        let lifetime = token.lifetime.unwrap_or(self.inner.config.token_lifetime);
        let generation = state.generation;
        state.current = Some(CachedToken {
            header: header.clone(),
            generation,
            refresh_at: obtained + lifetime.saturating_sub(refresh_margin(lifetime)),
        });
        Ok(AttemptAuth {
            header,
            generation: Some(generation),
        })
    }

    /// `POST /api/v2/tokens`, retried like an idempotent call (a login
    /// changes nothing); returns the ready `Bearer …` header.
    async fn login(&self, user_name: &str, password: &str) -> Result<LoginToken, ConnectorError> {
        retry::run(
            &self.inner.config.retry,
            "primero",
            EP_TOKENS,
            CallKind::Idempotent,
            None,
            || async {
                self.login_once(user_name, password)
                    .await
                    .map_err(AttemptError::Call)
            },
        )
        .await
    }

    async fn login_once(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<LoginToken, ConnectorError> {
        let span = tracing::debug_span!(
            "primero_call",
            endpoint = EP_TOKENS,
            status = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty
        );
        async move {
            let started = Instant::now();
            let body = LoginRequest {
                user: LoginUser {
                    user_name,
                    password,
                },
            };
            let request = self.inner.http.post(self.url(&["tokens"], &[])).json(&body);
            let answer = send(request, EP_TOKENS).await?;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let span = tracing::Span::current();
            span.record("status", answer.status.as_u16());
            span.record("elapsed_ms", elapsed_ms);
            tracing::debug!(
                status = answer.status.as_u16(),
                elapsed_ms,
                "Primero login done"
            );
            let status = answer.status;
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                return Err(ConnectorError::Auth {
                    system: System::Primero,
                    endpoint: EP_TOKENS.to_string(),
                    reason: error_reason(status, &answer.body),
                });
            }
            let answer = check_status(EP_TOKENS, answer)?;
            token_from_login(&answer.headers)
        }
        .instrument(span)
        .await
    }
}

/// A token from a v2.10 login: the ready header and, when its JWT says, how
/// long it lives.
struct LoginToken {
    header: HeaderValue,
    lifetime: Option<Duration>,
}

/// Up to v2.10 devise-jwt puts the JWT in the `Authorization` answer header
/// of a successful login. From v2.11 the login opens a cookie session and
/// no header comes: there is nothing to refresh, and only Basic works for an
/// API client (sessions need CSRF tokens for every write).
fn token_from_login(headers: &HeaderMap) -> Result<LoginToken, ConnectorError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ConnectorError::Auth {
            system: System::Primero,
            endpoint: EP_TOKENS.to_string(),
            reason: "login answered without a token: this Primero (v2.11 or later) has no \
                     tokens; set auth = \"basic\" in [primero] with a dedicated API user"
                .to_string(),
        })?;
    let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ConnectorError::Protocol {
            system: System::Primero,
            endpoint: EP_TOKENS.to_string(),
            reason: "token is not a valid header value".to_string(),
        }
    })?;
    Ok(LoginToken {
        header,
        lifetime: jwt_lifetime(token),
    })
}

/// `exp − iat` of a JWT (devise-jwt sets both), read without checking the
/// signature: it only decides when to log in again. Differences of clocks
/// between Primero and us do not matter this way.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Claims {
        iat: Option<i64>,
        exp: Option<i64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let secs = claims.exp?.checked_sub(claims.iat?)?;
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", enc(r#"{"alg":"HS256"}"#), enc(claims))
    }

    #[test]
    fn v2_10_login_token_comes_from_the_authorization_header() {
        let token = jwt(r#"{"sub":"1","scp":"user","iat":1700000000,"exp":1700003600,"jti":"x"}"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let login = token_from_login(&headers).unwrap();
        assert_eq!(login.header.to_str().unwrap(), format!("Bearer {token}"));
        assert_eq!(login.lifetime, Some(Duration::from_secs(3600)));
        // Not a JWT (or no claims): the configured lifetime applies.
        assert_eq!(jwt_lifetime("opaque"), None);
        assert_eq!(jwt_lifetime(&jwt(r#"{"exp":5}"#)), None);
        assert_eq!(jwt_lifetime(&jwt(r#"{"iat":9,"exp":5}"#)), None);
    }

    #[test]
    fn v2_11_login_without_token_says_to_use_basic() {
        // v2.11+ answers {id, user_name, group_permission} and a cookie.
        let err = token_from_login(&HeaderMap::new()).err().unwrap();
        match &err {
            ConnectorError::Auth { reason, .. } => {
                assert!(reason.contains("v2.11"), "{reason}");
                assert!(reason.contains(r#"auth = "basic""#), "{reason}");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert!(!err.is_transient());
    }
}

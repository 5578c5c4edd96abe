//! Authentication as the configured version does it: Basic, v2.10's JWT
//! login, v2.11's cookie session with its CSRF token.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::Utc;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::SimPrimeroVersion;
use super::merge::new_uuid;
use super::state::{PrimeroSim, SimState};
use super::wire::{devise_refusal, primero_error};

const LOGIN_FAILED: &str = "Invalid User name or password.";
/// Devise's answer to a request without valid credentials.
const UNAUTHENTICATED: &str = "You need to sign in or sign up before continuing.";
/// Rails' message when a session write lacks its CSRF token.
const CSRF_REFUSED: &str = "Can't verify CSRF token authenticity.";
/// Primero's session cookie (config/initializers/session_store.rb) and the
/// cookie / header of its CSRF token (concerns/csrf_protection.rb).
const SESSION_COOKIE: &str = "_app_session";
const CSRF_COOKIE: &str = "CSRF-TOKEN";
const CSRF_HEADER: &str = "x-csrf-token";
/// A native session lives this long without use (PRIMERO_NATIVE_SESSION_TIMEOUT).
const SESSION_TTL: Duration = Duration::from_secs(60 * 60);

pub(super) struct IssuedToken {
    user_name: String,
    expires_at: Instant,
}

/// A v2.11 cookie session: its user, CSRF token and idle expiry.
pub(super) struct Session {
    user_name: String,
    csrf: String,
    expires_at: Instant,
}

impl SimState {
    /// Who a request is, and how: Basic (both versions), a Bearer JWT
    /// (v2.10 only) or a session cookie (v2.11 only).
    fn authenticate(&mut self, headers: &HeaderMap) -> Option<Caller> {
        let version = self.config.version;
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let (scheme, credentials) = value.split_once(' ')?;
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credentials.trim())
                    .ok()?;
                let decoded = String::from_utf8(decoded).ok()?;
                let (user, password) = decoded.split_once(':')?;
                return (user == self.config.user_name && password == self.config.password)
                    .then(|| Caller::Basic(user.to_string()));
            }
            if scheme.eq_ignore_ascii_case("bearer") && version == SimPrimeroVersion::V2_10 {
                let token = credentials.trim();
                return match self.tokens.get(token) {
                    Some(t) if Instant::now() < t.expires_at => {
                        Some(Caller::Token(t.user_name.clone()))
                    }
                    Some(_) => {
                        self.tokens.remove(token);
                        None
                    }
                    None => None,
                };
            }
            return None;
        }
        if version != SimPrimeroVersion::V2_11 {
            return None;
        }
        let id = cookie(headers, SESSION_COOKIE)?;
        let session = self.sessions.get_mut(&id)?;
        if Instant::now() >= session.expires_at {
            self.sessions.remove(&id);
            return None;
        }
        session.expires_at = Instant::now() + SESSION_TTL;
        Some(Caller::Session {
            user_name: session.user_name.clone(),
            csrf: session.csrf.clone(),
        })
    }
}

/// How a request authenticated.
enum Caller {
    Basic(String),
    Token(String),
    /// A v2.11 session; its writes must send `csrf` in `X-CSRF-Token`.
    Session {
        user_name: String,
        csrf: String,
    },
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

#[derive(Clone)]
pub(super) struct ApiUser(pub(super) String);

pub(super) async fn require_auth(
    State(sim): State<PrimeroSim>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = sim.lock().authenticate(req.headers());
    let user = match caller {
        None => return devise_refusal(UNAUTHENTICATED),
        Some(Caller::Basic(user) | Caller::Token(user)) => user,
        Some(Caller::Session { user_name, csrf }) => {
            // protect_from_forgery: a session's writes need its CSRF token
            // (Basic is exempt, which is why the bridge uses Basic).
            let safe = matches!(req.method().as_str(), "GET" | "HEAD");
            let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !safe && sent != Some(csrf.as_str()) {
                return primero_error(
                    StatusCode::FORBIDDEN,
                    req.uri().path(),
                    json!(CSRF_REFUSED),
                    None,
                );
            }
            user_name
        }
    };
    req.extensions_mut().insert(ApiUser(user));
    next.run(req).await
}

#[derive(Deserialize)]
struct LoginBody {
    user: LoginUser,
}

#[derive(Deserialize)]
struct LoginUser {
    user_name: String,
    password: String,
}

pub(super) async fn login(State(sim): State<PrimeroSim>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<LoginBody>(&body) else {
        return devise_refusal(LOGIN_FAILED);
    };
    let mut st = sim.lock();
    if body.user.user_name != st.config.user_name || body.user.password != st.config.password {
        return devise_refusal(LOGIN_FAILED);
    }
    let user_name = body.user.user_name;
    let id = st
        .users
        .iter()
        .find(|u| u.user_name == user_name)
        .map_or(1, |u| u.id);
    match st.config.version {
        SimPrimeroVersion::V2_10 => {
            let ttl = st.config.token_ttl;
            let token = jwt(id, ttl);
            st.tokens.insert(
                token.clone(),
                IssuedToken {
                    user_name: user_name.clone(),
                    expires_at: Instant::now() + ttl,
                },
            );
            // tokens_controller renders the token in the body too; devise-jwt
            // adds the header.
            let mut response =
                Json(json!({ "id": id, "user_name": user_name, "token": token })).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                response.headers_mut().insert(header::AUTHORIZATION, v);
            }
            response
        }
        SimPrimeroVersion::V2_11 => {
            let session = random_hex();
            let csrf = random_hex();
            st.sessions.insert(
                session.clone(),
                Session {
                    user_name: user_name.clone(),
                    csrf: csrf.clone(),
                    expires_at: Instant::now() + SESSION_TTL,
                },
            );
            let mut response = Json(json!({
                "id": id,
                "user_name": user_name,
                "group_permission": "self",
            }))
            .into_response();
            let cookies = [
                format!("{SESSION_COOKIE}={session}; path=/; HttpOnly; SameSite=Lax"),
                format!("{CSRF_COOKIE}={csrf}; path=/; SameSite=Strict"),
            ];
            for c in cookies {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            response
        }
    }
}

/// A JWT shaped as devise-jwt issues it (`sub`, `scp`, `iat`, `exp`, `jti`);
/// the signature is random, the simulator only looks tokens up.
fn jwt(user_id: u64, ttl: Duration) -> String {
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let iat = Utc::now().timestamp();
    let exp = iat + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let header = json!({"alg": "HS256"});
    let claims = json!({
        "sub": user_id.to_string(),
        "scp": "user",
        "aud": null,
        "iat": iat,
        "exp": exp,
        "jti": new_uuid(),
    });
    format!("{}.{}.{}", enc(&header), enc(&claims), random_hex())
}

pub(super) async fn logout(State(sim): State<PrimeroSim>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let mut st = sim.lock();
    if let Some(token) = token {
        st.tokens.remove(&token);
    }
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        st.sessions.remove(&session);
    }
    Json(json!({})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primero::PrimeroSimConfig;

    async fn login(http: &reqwest::Client, base: &str) -> reqwest::Response {
        http.post(format!("{base}/api/v2/tokens"))
            .json(&json!({"user": {"user_name": "bridge_api", "password": "sim-password"}}))
            .send()
            .await
            .unwrap()
    }

    fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
        response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    #[tokio::test]
    async fn v2_11_login_opens_a_session_and_refuses_bearer() {
        let running = PrimeroSim::default()
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = running.base_url();
        let http = reqwest::Client::new();
        let answer = login(&http, &base).await;
        assert_eq!(answer.status(), 200);
        assert!(answer.headers().get(header::AUTHORIZATION).is_none());
        let session = set_cookie(&answer, SESSION_COOKIE).expect("session cookie");
        let csrf = set_cookie(&answer, CSRF_COOKIE).expect("csrf cookie");
        assert_eq!(
            answer.json::<Value>().await.unwrap(),
            json!({"id": 1, "user_name": "bridge_api", "group_permission": "self"})
        );
        let cases = format!("{base}/api/v2/cases");
        // A bearer token (any) is refused, in Devise's shape.
        let bearer = http.get(&cases).bearer_auth("abc").send().await.unwrap();
        assert_eq!(bearer.status(), 401);
        assert_eq!(
            bearer.json::<Value>().await.unwrap(),
            json!({"error": UNAUTHENTICATED})
        );
        // The session reads; its writes need the CSRF token; Basic needs none.
        let with_session = |req: reqwest::RequestBuilder| {
            req.header(header::COOKIE, format!("{SESSION_COOKIE}={session}"))
        };
        let read = with_session(http.get(&cases)).send().await.unwrap();
        assert_eq!(read.status(), 200);
        let body = json!({"data": {"status": "open"}});
        let refused = with_session(http.post(&cases))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(
            refused.json::<Value>().await.unwrap()["errors"][0]["message"],
            CSRF_REFUSED
        );
        let written = with_session(http.post(&cases))
            .header(CSRF_HEADER, &csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 200);
        let basic = http
            .post(&cases)
            .basic_auth("bridge_api", Some("sim-password"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 200);
        assert_eq!(running.case_count(), 2);
        running.shutdown().await;
    }

    #[tokio::test]
    async fn v2_10_login_hands_out_a_jwt_in_the_authorization_header() {
        let running = PrimeroSim::new(PrimeroSimConfig {
            version: SimPrimeroVersion::V2_10,
            token_ttl: Duration::from_secs(3600),
            ..PrimeroSimConfig::default()
        })
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        let base = running.base_url();
        let http = reqwest::Client::new();
        let answer = login(&http, &base).await;
        assert_eq!(answer.status(), 200);
        assert!(set_cookie(&answer, SESSION_COOKIE).is_none());
        let header = answer.headers()[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_string();
        let token = header.strip_prefix("Bearer ").unwrap().to_string();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        let body = answer.json::<Value>().await.unwrap();
        assert_eq!(
            body["token"],
            json!(token),
            "v2.10 renders it in the body too"
        );
        let read = http
            .get(format!("{base}/api/v2/cases"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        running.revoke_all_tokens();
        let refused = http
            .get(format!("{base}/api/v2/cases"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        running.shutdown().await;
    }
}

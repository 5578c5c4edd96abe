//! APIM's checks (subscription key, then bearer token) and the B2C token endpoint.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::state::PingSim;

fn apim_401(message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"statusCode": 401, "message": message})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// APIM checks the subscription key, then the JWT.
pub(super) async fn require_auth(State(sim): State<PingSim>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    match headers
        .get("Ocp-Apim-Subscription-Key")
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return apim_401(
                "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
            )
        }
        Some(key) if key != sim.inner.config.subscription_key => {
            return apim_401(
                "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
            )
        }
        Some(_) => {}
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let valid = token.is_some_and(|token| {
        let mut st = sim.lock();
        let now = Instant::now();
        st.tokens.retain(|_, expires| *expires > now);
        st.tokens.contains_key(&token)
    });
    if !valid {
        return apim_401("Unauthorized. Access token is missing or invalid.");
    }
    next.run(req).await
}

fn b2c_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

pub(super) async fn token(State(sim): State<PingSim>, headers: HeaderMap, body: Bytes) -> Response {
    sim.lock().calls.push("token".to_string());
    let config = &sim.inner.config;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return b2c_error(
            "invalid_request",
            "AADB2C90079: Clients must send a form-encoded request body.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "password" {
        return b2c_error(
            "unsupported_grant_type",
            "AADB2C90086: The supplied grant_type is not supported.",
        );
    }
    if field("client_id") != config.client_id {
        return b2c_error(
            "unauthorized_client",
            "AADB2C90057: The provided application is not configured to allow this flow.",
        );
    }
    if field("scope").trim().is_empty() || !field("response_type").contains("token") {
        return b2c_error(
            "invalid_request",
            "AADB2C90055: The scope or response_type provided in the request is missing or invalid.",
        );
    }
    if field("username") != config.username || field("password") != config.password {
        return b2c_error(
            "invalid_grant",
            "AADB2C90225: The username or password provided in the request are invalid.",
        );
    }
    let access_token = format!("sim.{}", uuid::Uuid::new_v4().simple());
    let ttl = {
        let mut st = sim.lock();
        let ttl = st.token_ttl;
        st.tokens.insert(access_token.clone(), Instant::now() + ttl);
        st.tokens_issued += 1;
        ttl
    };
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    }))
    .into_response()
}

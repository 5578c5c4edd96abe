//! Who is calling: the login form, sessions behind a cookie, tokens for
//! scripts, roles, and the CSRF token every change carries.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use maud::html;
use subtle::ConstantTimeEq as _;

use crate::sessions::{random_token, Session};
use crate::settings::{Credential, Role};
use crate::{password, view, Console};

/// The session cookie.
pub const SESSION_COOKIE: &str = "bridge_session";
/// The login form's own CSRF token (a double-submit cookie: there is no
/// session yet to tie it to).
const LOGIN_COOKIE: &str = "bridge_login";

/// Cookies the console sets: never readable by scripts, only sent over
/// HTTPS (browsers count loopback as such) and never with a request another
/// site starts.
fn cookie(name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .build()
}

fn removal(name: &'static str) -> Cookie<'static> {
    let mut c = cookie(name, String::new());
    c.make_removal();
    c
}

/// The account behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: String,
    pub role: Role,
    /// `None` for a script with a bearer token: it carries no cookie a
    /// forged request could ride on, so it needs no CSRF token.
    pub session: Option<Session>,
}

impl Caller {
    /// The session's CSRF token, for the forms of a page.
    pub fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.csrf.as_str())
    }

    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// A change may go ahead: the caller is an operator and the form came
    /// from one of this session's pages. The refusal is the page to answer.
    pub fn may_change(&self, csrf: &str, what: &str) -> Result<(), Response> {
        if let Some(session) = &self.session {
            if !session.csrf_ok(csrf) {
                tracing::warn!(account = %self.account, action = what, "refused: the form's CSRF token is not this session's");
                return Err(view::problem(
                    StatusCode::FORBIDDEN,
                    Some(self),
                    "Form expired",
                    "This form does not belong to your current session (it was opened before a \
                     new login, or sent from elsewhere). Nothing was changed. Open the page again \
                     and repeat the action.",
                ));
            }
        }
        if !self.is_operator() {
            tracing::warn!(account = %self.account, action = what, "refused: the account is a viewer");
            return Err(view::problem(
                StatusCode::FORBIDDEN,
                Some(self),
                "Operators only",
                "Your account is a viewer: only operator accounts replay records or move cursors. \
                 Nothing was changed.",
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<Arc<Console>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let peer = peer(parts);
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            let addr_key = format!("addr:{}", peer.ip());
            if let Err(wait) = console.throttle.check(&[&addr_key]) {
                return Err(too_many(wait));
            }
            // Token accounts only: a bearer never costs an argon2 check.
            let found = console.settings.accounts.iter().find(|a| {
                matches!(a.credential, Credential::Token(_))
                    && password::matches(Some(&a.credential), token)
            });
            return match found {
                Some(a) => Ok(Caller {
                    account: a.name.clone(),
                    role: a.role,
                    session: None,
                }),
                None => {
                    console.throttle.failed(&[&addr_key]);
                    tracing::warn!(addr = %peer.ip(), "console: a bearer token was refused");
                    Err((StatusCode::UNAUTHORIZED, "unknown token\n").into_response())
                }
            };
        }
        let jar = CookieJar::from_headers(&parts.headers);
        if let Some(session) = jar
            .get(SESSION_COOKIE)
            .and_then(|c| console.sessions.get(c.value()))
        {
            return Ok(Caller {
                account: session.account.clone(),
                role: session.role,
                session: Some(session),
            });
        }
        // A browser without a session: to the login form (a change is not
        // replayed after the login: it is simply refused).
        if parts.method == Method::GET {
            Err(Redirect::to("/login").into_response())
        } else {
            Err(view::problem(
                StatusCode::UNAUTHORIZED,
                None,
                "Logged out",
                "Your session ended (logged out, idle too long, or the service restarted). \
                 Nothing was changed. Log in again and repeat the action.",
            ))
        }
    }
}

fn peer(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn too_many(wait: std::time::Duration) -> Response {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    view::problem(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        "Too many failed logins",
        &format!(
            "Too many failed logins for this account or from this address. Try again in {minutes} \
             minute(s); an administrator can check the service log."
        ),
    )
}

/// GET /login.
pub async fn login_form(State(console): State<Arc<Console>>, jar: CookieJar) -> Response {
    if jar
        .get(SESSION_COOKIE)
        .and_then(|c| console.sessions.get(c.value()))
        .is_some()
    {
        return Redirect::to("/").into_response();
    }
    form_page(jar, StatusCode::OK, None)
}

fn form_page(jar: CookieJar, status: StatusCode, error: Option<&str>) -> Response {
    let token = random_token();
    let body = html! {
        form.login method="post" action="/login" {
            h1 { "Log in" }
            @if let Some(error) = error {
                p.banner.error role="alert" { (error) }
            }
            input type="hidden" name="login_token" value=(token);
            label for="name" { "Account" }
            input #name type="text" name="name" autocomplete="username" required autofocus;
            label for="password" { "Password or token" }
            input #password type="password" name="password" autocomplete="current-password" required;
            button type="submit" { "Log in" }
        }
    };
    let jar = jar.add(cookie(LOGIN_COOKIE, token));
    (
        status,
        jar,
        axum::response::Html(view::bare("Log in", body).into_string()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    login_token: String,
}

/// POST /login.
pub async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_string());
    let fresh = expected.is_some_and(|e| {
        !e.is_empty() && bool::from(e.as_bytes().ct_eq(form.login_token.as_bytes()))
    });
    if !fresh {
        return form_page(
            jar,
            StatusCode::BAD_REQUEST,
            Some("The login form expired. Please log in again."),
        );
    }
    let name_key = format!("name:{}", form.name);
    let addr_key = format!("addr:{}", peer.ip());
    if let Err(wait) = console.throttle.check(&[&name_key, &addr_key]) {
        tracing::warn!(addr = %peer.ip(), action = "login", "console login refused: too many failed logins");
        return too_many(wait);
    }
    let account = console.account(&form.name).cloned();
    let credential = account.as_ref().map(|a| a.credential.clone());
    let given = form.password;
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let ok = tokio::task::spawn_blocking(move || password::matches(credential.as_ref(), &given))
        .await
        .unwrap_or(false);
    let Some(account) = account.filter(|_| ok) else {
        console.throttle.failed(&[&name_key, &addr_key]);
        // What was typed as a name is logged only when it is an account's:
        // a mistyped field can hold a password or a person's name.
        match console.account(&form.name) {
            Some(a) => {
                tracing::warn!(account = %a.name, addr = %peer.ip(), action = "login", "console login failed: wrong password")
            }
            None => {
                tracing::warn!(addr = %peer.ip(), action = "login", "console login failed: unknown account")
            }
        }
        return form_page(
            jar,
            StatusCode::UNAUTHORIZED,
            Some("Wrong account name or password."),
        );
    };
    console.throttle.succeeded(&name_key);
    let (id, _) = console.sessions.start(&account.name, account.role);
    tracing::info!(account = %account.name, role = account.role.as_str(), addr = %peer.ip(), action = "login", "console login");
    let jar = jar
        .remove(removal(LOGIN_COOKIE))
        .add(cookie(SESSION_COOKIE, id));
    (jar, Redirect::to("/")).into_response()
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// POST /logout.
pub async fn logout(
    State(console): State<Arc<Console>>,
    caller: Caller,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(session) = &caller.session {
        if !session.csrf_ok(&form.csrf) {
            return Redirect::to("/").into_response();
        }
    }
    if let Some(c) = jar.get(SESSION_COOKIE) {
        console.sessions.end(c.value());
    }
    tracing::info!(account = %caller.account, action = "logout", "console logout");
    (jar.remove(removal(SESSION_COOKIE)), Redirect::to("/login")).into_response()
}

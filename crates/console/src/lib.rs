//! The operator console of `bridge run`: what a country's system
//! administrator looks at and acts on without a shell.
//!
//! Server-rendered HTML over the running service's own state (the same
//! `App` the scheduler runs): flows with their schedule and last runs, run
//! history with per-record outcomes and reasons, what is held or
//! dead-lettered with what resolves it and a replay button, cursors, the
//! loaded job versions and mapping hash, the inbox queue, consent alerts and
//! the audit trail. Only system ids, codes, statuses and times are shown.
//!
//! No JavaScript and nothing from another origin: one stylesheet served by
//! the console itself. Accounts come from `bridge.toml` (argon2 password
//! hashes, or a token); roles `viewer` and `operator` (only operators replay
//! or move a cursor). Sessions live in memory behind an HttpOnly, Secure,
//! SameSite=Strict cookie; every change carries the session's CSRF token;
//! failed logins are rate-limited per name and per address; every operator
//! action is logged with the account name.
//!
//! Modules: [`settings`] (what config gives), [`password`], [`sessions`],
//! [`throttle`], `auth` (who is calling), `view` (the page frame),
//! `pages` (one module per page), `actions` (replay, cursor move).

// A refusal is the page to answer, built once per request: boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod actions;
mod auth;
mod pages;
pub mod password;
pub mod sessions;
pub mod settings;
pub mod throttle;
mod view;

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;

use bridge_flows::app::App;
pub use settings::{Account, ConsoleSettings, Credential, LoginLimit, Role};

/// A flow the service runs on a schedule.
#[derive(Debug, Clone)]
pub struct ScheduledFlow {
    pub flow: String,
    /// The cron expression as written in `bridge.toml`.
    pub expression: String,
    pub schedule: cron::Schedule,
}

/// What the console looks at: the running service.
pub struct Service {
    pub app: Arc<App>,
    pub schedule: Vec<ScheduledFlow>,
}

/// The console's state, shared by every request.
pub struct Console {
    settings: ConsoleSettings,
    sessions: sessions::Sessions,
    throttle: throttle::LoginThrottle,
    service: Service,
}

impl Console {
    pub fn new(settings: ConsoleSettings, service: Service) -> Arc<Self> {
        Arc::new(Self {
            sessions: sessions::Sessions::new(settings.session_idle, settings.session_max),
            throttle: throttle::LoginThrottle::new(settings.login_limit),
            settings,
            service,
        })
    }

    fn account(&self, name: &str) -> Option<&Account> {
        self.settings.accounts.iter().find(|a| a.name == name)
    }

    /// The console's routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(pages::overview::page))
            .route("/login", get(auth::login_form).post(auth::login))
            .route("/logout", post(auth::logout))
            .route("/runs", get(pages::runs::list))
            .route("/runs/{id}", get(pages::runs::show))
            .route("/attention", get(pages::attention::page))
            .route("/dead-letter/{id}/replay", post(actions::replay))
            .route("/cursors", get(pages::cursors::page))
            .route("/cursors/{flow}", post(actions::move_cursor))
            .route("/jobs", get(pages::jobs::page))
            .route("/inbox", get(pages::inbox::page))
            .route("/consent", get(pages::safeguards::consent))
            .route("/audit", get(pages::safeguards::audit))
            .route("/console.css", get(view::stylesheet))
            .fallback(view::not_found)
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.clone())
    }
}

/// Every answer: no framing, no sniffing, no referrer, nothing cached, and
/// nothing loaded from anywhere but the console itself.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The console bound to its address, not yet serving.
pub struct BoundConsole {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    router: Router,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr} (console.listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the console failed: {0}")]
    Serve(std::io::Error),
}

impl BoundConsole {
    /// Bind the console's listener (loopback only).
    pub async fn bind(console: Arc<Console>) -> Result<Self, ConsoleError> {
        let listen = console.settings.listen;
        if let Some(why) = settings::listen_problem(&listen) {
            return Err(ConsoleError::Refused(format!("console.listen: {why}")));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ConsoleError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(ConsoleError::Serve)?;
        Ok(Self {
            addr,
            listener,
            router: console.router(),
        })
    }

    /// Serve until `stop` completes.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ConsoleError> {
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .into_future()
        .await
        .map_err(ConsoleError::Serve)
    }
}

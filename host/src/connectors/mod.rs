//! Clients for the external systems. Each error names the system, the endpoint
//! and the HTTP status; none carries a credential or a payload.
//!
//! Every call goes through [`retry::run`] (bounded retry inside a run) and a
//! per-partner [`limits::Limiter`] (calls in flight, call rate).

pub mod dtp;
pub mod limits;
pub mod ping;
pub mod primero;
pub mod retry;

pub use limits::PartnerLimits;
pub use retry::RetryPolicy;

use std::fmt;

/// The external system a connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Primero,
    Ping,
    PingToken,
    Dtp,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Primero => "Primero",
            System::Ping => "PING",
            System::PingToken => "PING token service",
            System::Dtp => "DTP",
        })
    }
}

/// A failed call to an external system.
///
/// `endpoint` is a method and a path template (`GET /api/v2/cases`), never a
/// query string or a body, so no personal data or credential can leak through it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The partner answered with a non-success status.
    #[error("{system} {endpoint} answered HTTP {status}: {reason}")]
    Status {
        system: System,
        endpoint: String,
        status: u16,
        /// The partner's own short error message (e.g. Primero `errors[0].message`), if any.
        reason: String,
        /// Seconds from a `Retry-After` header, when present.
        retry_after: Option<u64>,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("{system} {endpoint} unreachable: {reason}")]
    Transport {
        system: System,
        endpoint: String,
        reason: String,
        timed_out: bool,
        /// The connection could not be made (refused, DNS, TLS handshake):
        /// the request surely was not processed.
        connect_failed: bool,
    },
    /// The partner answered 2xx with a body we could not understand.
    #[error("{system} {endpoint} sent an unexpected response: {reason}")]
    Protocol {
        system: System,
        endpoint: String,
        reason: String,
    },
    /// Login failed (bad credentials or token service error).
    #[error("{system} authentication failed at {endpoint}: {reason}")]
    Auth {
        system: System,
        endpoint: String,
        reason: String,
    },
    /// A write refused before it left: the client is read-only (a dry run).
    #[error("{system} {endpoint} not sent: the client is read-only (dry run)")]
    ReadOnly { system: System, endpoint: String },
}

/// Whether a partner call changes anything at the partner. Reads that are
/// POSTs (PING retrieve and check status) are reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Write,
}

/// A client's write guard: a read-only client (dry run) refuses every write
/// before it is sent, whatever the flow asks.
pub fn guard(
    read_only: bool,
    effect: Effect,
    system: System,
    endpoint: &str,
) -> Result<(), ConnectorError> {
    if read_only && effect == Effect::Write {
        tracing::error!(%system, endpoint, "write refused: the client is read-only (dry run)");
        return Err(ConnectorError::ReadOnly {
            system,
            endpoint: endpoint.to_string(),
        });
    }
    Ok(())
}

impl ConnectorError {
    /// Worth retrying inside a run: transport failures, 5xx, 429 (after `retry_after`).
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectorError::Transport { .. } => true,
            ConnectorError::Status { status, .. } => *status >= 500 || *status == 429,
            ConnectorError::Protocol { .. }
            | ConnectorError::Auth { .. }
            | ConnectorError::ReadOnly { .. } => false,
        }
    }

    /// HTTP status, when the partner answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `Retry-After` the partner sent with a status error, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ConnectorError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Build a transport error from reqwest without its URL (the URL may carry
    /// query values such as an individual id).
    pub fn transport(system: System, endpoint: impl Into<String>, err: &reqwest::Error) -> Self {
        let reason = if err.is_timeout() {
            "timed out".to_string()
        } else if err.is_connect() {
            "connection failed".to_string()
        } else if err.is_body() || err.is_decode() {
            "response body could not be read".to_string()
        } else {
            "request failed".to_string()
        };
        ConnectorError::Transport {
            system,
            endpoint: endpoint.into(),
            reason,
            timed_out: err.is_timeout(),
            connect_failed: err.is_connect(),
        }
    }
}

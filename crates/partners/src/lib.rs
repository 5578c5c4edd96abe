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
pub mod section;

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
        /// Which failure it was, as far as the transport tells.
        cause: TransportCause,
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

    /// Build a transport error from reqwest naming the class of failure and
    /// where it went: the URL's scheme, host and port only (its path and
    /// query may carry values such as an individual id).
    pub fn transport(system: System, endpoint: impl Into<String>, err: &reqwest::Error) -> Self {
        let cause = TransportCause::of(err);
        let reason = match err.url().map(|u| u.origin()) {
            Some(origin) if origin.is_tuple() => {
                format!("{} at {}", cause.describe(), origin.ascii_serialization())
            }
            _ => cause.describe().to_string(),
        };
        ConnectorError::Transport {
            system,
            endpoint: endpoint.into(),
            reason,
            timed_out: err.is_timeout(),
            connect_failed: err.is_connect(),
            cause,
        }
    }

    /// The kind of transport failure, when this is one.
    pub fn transport_cause(&self) -> Option<TransportCause> {
        match self {
            ConnectorError::Transport { cause, .. } => Some(*cause),
            _ => None,
        }
    }
}

/// Why a call got no answer, from the error's chain of causes: what an
/// operator must fix differs (DNS entry, firewall, certificate, latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportCause {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens at that address and port (or a firewall rejects).
    Refused,
    /// TLS: the server's certificate is not trusted (unknown CA, wrong host name, expired).
    TlsServerCertificate,
    /// TLS: the server ended the handshake with an alert, e.g. it refused
    /// the client certificate.
    TlsRefusedByServer,
    /// Another TLS failure.
    Tls,
    /// No answer in time.
    Timeout,
    /// The connection could not be made for another reason.
    Connect,
    /// The answer's body could not be read.
    Body,
    /// The connection broke after it was made.
    Other,
}

impl TransportCause {
    pub fn of(err: &reqwest::Error) -> Self {
        let mut tls = None;
        let mut refused = false;
        let mut dns = false;
        let mut timed_out = err.is_timeout();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = current {
            if let Some(r) = e.downcast_ref::<rustls::Error>() {
                tls = Some(Self::of_rustls(r));
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => refused = true,
                    std::io::ErrorKind::TimedOut => timed_out = true,
                    _ => {}
                }
                // `source()` of an io::Error skips the error it wraps, and
                // the TLS connector wraps io errors in io errors: look down.
                let mut inner = io.get_ref();
                while let Some(wrapped) = inner {
                    if let Some(r) = wrapped.downcast_ref::<rustls::Error>() {
                        tls = Some(Self::of_rustls(r));
                        break;
                    }
                    inner = wrapped
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::get_ref);
                }
            }
            let text = e.to_string();
            // hyper-util names a failed lookup so; its cause is the resolver's.
            if text == "dns error" {
                dns = true;
            }
            // A TLS alert read after the handshake (TLS 1.3 refuses a client
            // certificate so) may reach us only as text.
            if tls.is_none() && text.contains("received fatal alert") {
                tls = Some(TransportCause::TlsRefusedByServer);
            }
            current = e.source();
        }
        if dns {
            TransportCause::Dns
        } else if refused {
            TransportCause::Refused
        } else if let Some(tls) = tls {
            tls
        } else if timed_out {
            TransportCause::Timeout
        } else if err.is_connect() {
            TransportCause::Connect
        } else if err.is_body() || err.is_decode() {
            TransportCause::Body
        } else {
            TransportCause::Other
        }
    }

    fn of_rustls(err: &rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(_) => TransportCause::TlsServerCertificate,
            rustls::Error::AlertReceived(_) => TransportCause::TlsRefusedByServer,
            _ => TransportCause::Tls,
        }
    }

    /// A short description, also the `reason` of the transport error.
    pub fn describe(self) -> &'static str {
        match self {
            TransportCause::Dns => "DNS lookup failed",
            TransportCause::Refused => "connection refused",
            TransportCause::TlsServerCertificate => {
                "TLS handshake failed: the server's certificate is not trusted"
            }
            TransportCause::TlsRefusedByServer => {
                "TLS handshake refused by the server (alert received)"
            }
            TransportCause::Tls => "TLS handshake failed",
            TransportCause::Timeout => "timed out",
            TransportCause::Connect => "connection failed",
            TransportCause::Body => "response body could not be read",
            TransportCause::Other => "request failed",
        }
    }
}

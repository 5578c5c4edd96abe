//! What replicas sharing one database coordinate with: leases on a flow's
//! runs with fencing tokens, claims on inbox messages, and the partner
//! limits of the whole cluster.

use std::fmt;
use std::time::Duration;

use super::InboxMessage;

/// A lease on a named piece of work (a flow's runs: [`Lease::flow_name`]),
/// held by one owner (a replica id) until `expires_at`. `token` grows by one
/// each time the lease changes owner: the fencing token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub token: i64,
    /// RFC 3339 UTC: when this owner took it.
    pub acquired_at: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
}

impl Lease {
    /// The lease name of a flow's runs.
    pub fn flow_name(flow: &str) -> String {
        format!("flow:{flow}")
    }

    /// The fence of writes made under this lease.
    pub fn fence(&self) -> Fence {
        Fence::Lease {
            name: self.name.clone(),
            token: self.token,
        }
    }

    /// Unexpired at `now` (RFC 3339 UTC, as stored).
    pub fn live_at(&self, now: &str) -> bool {
        self.expires_at.as_str() > now
    }
}

/// What a fenced write is checked against, inside the write's own
/// transaction: a write from a replica that lost its lease (paused,
/// partitioned) is refused instead of committing over its successor's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Refused when lease `name`'s token is no longer `token`.
    Lease { name: String, token: i64 },
    /// Refused when inbox message `message_id` was claimed again since (its
    /// claim token moved on) or is gone.
    Claim { message_id: String, token: i64 },
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fence::Lease { name, token } => write!(f, "lease {name} token {token}"),
            Fence::Claim { message_id, token } => {
                write!(f, "claim on inbox message {message_id} token {token}")
            }
        }
    }
}

/// An inbox message claimed for processing, with the fence of its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMessage {
    pub message: InboxMessage,
    pub fence: Fence,
}

/// RFC 3339 UTC (milliseconds, as stored) of `now + ttl`.
pub(crate) fn after(now: chrono::DateTime<chrono::Utc>, ttl: Duration) -> String {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX);
    stamp(now.checked_add_signed(ttl).unwrap_or(now))
}

/// RFC 3339 UTC with milliseconds: the stored form, which sorts by time.
pub fn stamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

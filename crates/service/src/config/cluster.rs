//! `[cluster]`: this process as one replica of a deployment whose replicas
//! share one state database (PostgreSQL; see docs/operator/replicas.md).

use std::time::Duration;

use serde::Deserialize;

use super::{BridgeConfig, ConfigError};
use bridge_flows::lease::{Replica, DEFAULT_LEASE_TTL};

/// As written in bridge.toml; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Names this replica in leases, claims, `/readyz`, metrics and the
    /// console; default `<host>-<pid>-<4 hex>`. Unique per running process.
    pub replica: Option<String>,
    /// How long a flow lease or inbox claim outlives its holder's last
    /// renewal: how long a dead replica's work waits before another replica
    /// takes it over (default 15).
    pub lease_ttl_secs: Option<u64>,
}

/// Shortest lease: renewals every third of it must fit a slow database.
const MIN_LEASE_TTL_SECS: u64 = 3;
/// Longest replica name kept.
const MAX_REPLICA_CHARS: usize = 64;

impl BridgeConfig {
    /// Problems of `[cluster]`.
    pub fn cluster_problems(&self) -> Vec<ConfigError> {
        let c = &self.cluster;
        let mut problems = Vec::new();
        if let Some(name) = &c.replica {
            let ok = !name.is_empty()
                && name.chars().count() <= MAX_REPLICA_CHARS
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch));
            if !ok {
                problems.push(self.key_error_at(
                    "cluster.replica",
                    format!(
                        "must be 1 to {MAX_REPLICA_CHARS} characters of letters, digits and - _ . :"
                    ),
                ));
            }
        }
        if c.lease_ttl_secs.is_some_and(|s| s < MIN_LEASE_TTL_SECS) {
            problems.push(self.key_error_at(
                "cluster.lease_ttl_secs",
                format!("must be at least {MIN_LEASE_TTL_SECS} (seconds)"),
            ));
        }
        problems
    }

    /// This process as a replica.
    pub fn replica(&self) -> Replica {
        let ttl = self.cluster.lease_ttl_secs.map_or(DEFAULT_LEASE_TTL, |s| {
            Duration::from_secs(s.max(MIN_LEASE_TTL_SECS))
        });
        Replica::new(self.cluster.replica.as_deref(), ttl)
    }
}

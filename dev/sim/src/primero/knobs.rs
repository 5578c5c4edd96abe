//! Test knobs: request counters, faults, latency, in-flight and arrival
//! records, the write hook, role, lookups, tokens, version, clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::config::SimPrimeroVersion;
use super::faults::{Fault, FaultRule, WriteHook};
use super::role::SimRole;
use super::state::PrimeroSim;

impl PrimeroSim {
    /// Requests seen for `"METHOD /path/{template}"`, e.g.
    /// `"POST /api/v2/tokens"` or `"PATCH /api/v2/cases/{id}"`. Counted
    /// before auth and faults, so refused requests count too.
    pub fn request_count(&self, key: &str) -> u64 {
        self.lock().requests.get(key).copied().unwrap_or(0)
    }

    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.lock().requests.clone()
    }

    pub fn reset_request_counts(&self) {
        self.lock().requests.clear();
    }

    /// Answer the next `count` requests whose method is `method` (`"*"` for
    /// any) and whose path starts with `path_prefix` with `status` and a
    /// Primero error body.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, count: usize) {
        self.add_fault(FaultRule {
            method: Some(method.to_string()),
            path_prefix: path_prefix.to_string(),
            fault: Fault::Status {
                status,
                retry_after: None,
            },
            remaining: count,
        });
    }

    /// Add a fault rule; rules are tried in the order added.
    pub fn add_fault(&self, rule: FaultRule) {
        self.lock().faults.push(rule);
    }

    /// Apply `fault` to the next `count` requests whose method is `method`
    /// (`"*"` for any) and whose path starts with `path_prefix`.
    pub fn inject_fault(&self, method: &str, path_prefix: &str, fault: Fault, count: usize) {
        self.add_fault(FaultRule {
            method: Some(method.to_string()),
            path_prefix: path_prefix.to_string(),
            fault,
            remaining: count,
        });
    }

    /// The most requests ever handled at the same time (since the last reset).
    pub fn max_in_flight_seen(&self) -> usize {
        self.in_flight.max_seen()
    }

    /// The most requests of one endpoint (`request_count`'s key, e.g.
    /// `"GET /api/v2/users"`) handled at the same time (since the last reset).
    pub fn max_in_flight_seen_for(&self, key: &str) -> usize {
        self.lock().in_flight_by.get(key).map_or(0, |(_, max)| *max)
    }

    /// Requests of one endpoint being handled now.
    pub fn in_flight_for(&self, key: &str) -> usize {
        self.lock().in_flight_by.get(key).map_or(0, |(now, _)| *now)
    }

    /// Forget the in-flight high-water marks and the arrival times.
    pub fn reset_in_flight(&self) {
        self.in_flight.reset();
        let mut st = self.lock();
        st.arrivals.clear();
        for (now, max) in st.in_flight_by.values_mut() {
            *max = *now;
        }
    }

    /// When each request arrived, in order (for rate-limit checks).
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }

    /// From now on, keep every write body received (POST, PATCH, PUT,
    /// DELETE other than a login or logout), as it arrived: what a test
    /// compares with what the bridge declares it shares. Off by default (a
    /// benchmark's thousands of cases would be held for nothing).
    pub fn record_writes(&self) {
        self.lock().writes.get_or_insert_with(Vec::new);
    }

    /// The write bodies received since [`record_writes`](Self::record_writes), in order.
    pub fn received_writes(&self) -> Vec<ReceivedWrite> {
        self.lock().writes.clone().unwrap_or_default()
    }

    pub(super) fn keep_write(&self, endpoint: String, body: &[u8]) {
        let mut st = self.lock();
        if let Some(writes) = st.writes.as_mut() {
            let body = serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
            writes.push(ReceivedWrite { endpoint, body });
        }
    }

    /// Call `hook(method, path)` after every case create/update and referral
    /// create/decision has been applied, before its answer is sent.
    pub fn set_write_hook(&self, hook: WriteHook) {
        self.lock().write_hook = Some(hook);
    }

    pub fn clear_write_hook(&self) {
        self.lock().write_hook = None;
    }

    pub(super) fn after_write(&self, method: &str, path: &str) {
        let hook = self.lock().write_hook.clone();
        if let Some(hook) = hook {
            hook(method, path);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Delay added to every request before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Change the API user's role from the next request on (see [`SimRole`]).
    pub fn set_role(&self, role: SimRole) {
        self.lock().config.role = role;
    }

    pub fn role(&self) -> SimRole {
        self.lock().config.role.clone()
    }

    /// The options of a select field checked on HTTP writes
    /// (`services_section.<field>` for a service field); `None` stops
    /// checking it. Defaults: `status`, `sex`, and the service's
    /// `service_response_type`, `service_implemented`, `service_referral`,
    /// `unhcr_referral_status`.
    pub fn set_lookup(&self, field: &str, options: Option<Vec<String>>) {
        let mut st = self.lock();
        match options {
            Some(options) => st.lookups.insert(field.to_string(), options),
            None => st.lookups.remove(field),
        };
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().config.token_ttl = ttl;
    }

    /// Invalidate every issued bearer token (as a server restart would).
    pub fn revoke_all_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Play another Primero version's login from now on.
    pub fn set_version(&self, version: SimPrimeroVersion) {
        self.lock().config.version = version;
    }

    /// Stamp every write from now on with this second (`None`: the real
    /// clock again), so tests can put many cases on one `last_updated_at`.
    /// The clock never goes backwards: an earlier pin reads as the latest
    /// stamp given.
    pub fn pin_clock(&self, at: Option<DateTime<Utc>>) {
        self.lock().clock.pinned = at;
    }
}

/// A write body as it reached the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedWrite {
    /// Method and route, e.g. `POST /api/v2/cases`,
    /// `PATCH /api/v2/cases/{id}/referrals/{referral_id}`.
    pub endpoint: String,
    /// The JSON body (`{"data": …}`); a body that is not JSON as a string.
    pub body: Value,
}

//! The DTP simulator's state: what it received, its fault knobs, inspection.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::{DtpEndpoint, DtpSimConfig};
use crate::primero::InFlight;

/// A body the simulator accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct DtpReceived {
    pub endpoint: DtpEndpoint,
    pub body: Value,
    /// SHA-1 thumbprint of the client certificate the body came with.
    pub client_thumbprint: Option<String>,
}

/// One request and the status it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtpRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// An injected failure (the same shape as the PING simulator's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (and `Retry-After` seconds) without processing.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer this status with this body verbatim, without processing.
    Body { status: u16, body: String },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without a complete answer; not processed.
    Hangup,
    /// Process (record) the request, then close the connection without a
    /// complete answer.
    HangupAfter,
}

struct Fault {
    path_prefix: String,
    kind: FaultKind,
    remaining: usize,
}

#[derive(Default)]
pub(super) struct SimState {
    pub(super) latency: Duration,
    pub(super) received: Vec<DtpReceived>,
    pub(super) requests: Vec<DtpRequest>,
    pub(super) arrivals: Vec<Instant>,
    faults: Vec<Fault>,
}

impl SimState {
    pub(super) fn take_fault(&mut self, path: &str) -> Option<FaultKind> {
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && path.starts_with(&f.path_prefix))?;
        fault.remaining -= 1;
        let kind = fault.kind.clone();
        self.faults.retain(|f| f.remaining > 0);
        Some(kind)
    }
}

pub(super) struct Inner {
    pub(super) config: DtpSimConfig,
    state: Mutex<SimState>,
    pub(super) in_flight: InFlight,
}

/// Handle to the simulator's state. Cheap to clone.
#[derive(Clone)]
pub struct DtpSim {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for DtpSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpSim")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl DtpSim {
    pub fn new(config: DtpSimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(SimState::default()),
                in_flight: InFlight::default(),
            }),
        }
    }

    pub fn config(&self) -> &DtpSimConfig {
        &self.inner.config
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not hide the state from the others.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every accepted body, in order.
    pub fn received(&self) -> Vec<DtpReceived> {
        self.lock().received.clone()
    }

    /// Accepted bodies of one endpoint, in order.
    pub fn bodies(&self, endpoint: DtpEndpoint) -> Vec<Value> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .map(|r| r.body.clone())
            .collect()
    }

    /// Every request that reached HTTP (after the TLS handshake), with its status.
    pub fn requests(&self) -> Vec<DtpRequest> {
        self.lock().requests.clone()
    }

    /// Forget what was received.
    pub fn clear_received(&self) {
        let mut st = self.lock();
        st.received.clear();
        st.requests.clear();
    }

    /// Delay every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The next `count` requests whose path starts with `path_prefix` are
    /// answered with `status` and not recorded as received.
    pub fn fail_next(&self, path_prefix: &str, status: u16, count: usize) {
        self.inject_fault(
            path_prefix,
            FaultKind::Status {
                status,
                retry_after: None,
            },
            count,
        );
    }

    /// Apply `kind` to the next `count` requests whose path starts with `path_prefix`.
    pub fn inject_fault(&self, path_prefix: &str, kind: FaultKind, count: usize) {
        if count > 0 {
            self.lock().faults.push(Fault {
                path_prefix: path_prefix.to_string(),
                kind,
                remaining: count,
            });
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The most requests ever handled at the same time (since the last reset).
    pub fn max_in_flight_seen(&self) -> usize {
        self.inner.in_flight.max_seen()
    }

    /// Forget the in-flight high-water mark and the arrival times.
    pub fn reset_in_flight(&self) {
        self.inner.in_flight.reset();
        self.lock().arrivals.clear();
    }

    /// When each request arrived (after the TLS handshake), in order.
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }
}

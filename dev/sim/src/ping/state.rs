//! The simulator's shared state and its handle, [`PingSim`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::config::PingSimConfig;
use super::faults::{Fault, FaultKind};
use super::model::{
    InteropReferralState, InterventionState, PendingRowShape, ReceivedBody, ReceivedIngestion,
    ReceivedRequest, SimIntervention, INTEROP_STATUS_NEW,
};
use super::wire::Row;
use crate::primero::InFlight;

pub(super) struct Delivery {
    pub(super) delivery_id: String,
    pub(super) status_date: String,
}

pub(super) struct StoredIntervention {
    pub(super) spec: SimIntervention,
    pub(super) delivery: Option<Delivery>,
    pub(super) transfer_status: Option<String>,
    pub(super) transfer_status_date: Option<String>,
    pub(super) primero_id: Option<String>,
    pub(super) primero_caseworker: Option<String>,
    pub(super) comments: Vec<String>,
    pub(super) status_writes: usize,
}

impl StoredIntervention {
    pub(super) fn state(&self) -> InterventionState {
        InterventionState {
            lpinterventionid: self.spec.lpinterventionid.clone(),
            pending: self.delivery.is_some(),
            transfer_status: self.transfer_status.clone(),
            transfer_status_date: self.transfer_status_date.clone(),
            primero_id: self.primero_id.clone(),
            primero_caseworker: self.primero_caseworker.clone(),
            comments: self.comments.clone(),
            status_writes: self.status_writes,
        }
    }
}

/// One item of an async ingestion's outcome, served by check status.
pub(super) struct TransactionItem {
    pub(super) status: String,
    pub(super) data: Row,
    pub(super) message: String,
}

pub(super) struct PagingCursor {
    pub(super) shipping_process_id: String,
    pub(super) rows: Arc<Vec<Row>>,
    pub(super) offset: usize,
    pub(super) page_number: i64,
}

pub(super) struct SimState {
    pub(super) token_ttl: Duration,
    pub(super) page_size: usize,
    pub(super) latency: Duration,
    pub(super) tokens: HashMap<String, Instant>,
    pub(super) tokens_issued: usize,
    pub(super) interventions: Vec<StoredIntervention>,
    /// `lpinterventionid` → position in `interventions` (only ever pushed to
    /// or replaced in place), so a lookup does not scan thousands of them.
    pub(super) intervention_index: HashMap<String, usize>,
    pub(super) interop_referrals: Vec<InteropReferralState>,
    pub(super) transactions: HashMap<String, Vec<TransactionItem>>,
    pub(super) paging: HashMap<String, PagingCursor>,
    pub(super) ingestions: Vec<ReceivedIngestion>,
    pub(super) bodies: Vec<ReceivedBody>,
    pub(super) requests: Vec<ReceivedRequest>,
    /// Calls by kind and shipping process (`"retrieve SHP-2358"`), in the
    /// order they arrived; see [`PingSim::call_counts`].
    pub(super) calls: Vec<String>,
    pub(super) arrivals: Vec<Instant>,
    pub(super) faults: Vec<Fault>,
    /// Messages for the next async records that proGres refuses (check status `Failed`).
    pub(super) async_refusals: Vec<String>,
    pub(super) pending_row_shape: PendingRowShape,
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

    pub(super) fn intervention(&self, id: &str) -> Option<&StoredIntervention> {
        self.intervention_index
            .get(id)
            .map(|&i| &self.interventions[i])
    }

    pub(super) fn intervention_mut(&mut self, id: &str) -> Option<&mut StoredIntervention> {
        match self.intervention_index.get(id) {
            Some(&i) => Some(&mut self.interventions[i]),
            None => None,
        }
    }
}

pub(super) struct Inner {
    pub(super) config: PingSimConfig,
    state: Mutex<SimState>,
    pub(super) in_flight: InFlight,
}

/// Handle to a simulator's shared state. Cheap to clone.
#[derive(Clone)]
pub struct PingSim {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for PingSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingSim")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(super) fn today() -> String {
    chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

pub(super) fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl PingSim {
    pub fn new(config: PingSimConfig) -> Self {
        let state = SimState {
            token_ttl: Duration::from_secs(config.token_ttl_secs),
            page_size: config.page_size.max(1),
            latency: Duration::ZERO,
            tokens: HashMap::new(),
            tokens_issued: 0,
            interventions: Vec::new(),
            intervention_index: HashMap::new(),
            interop_referrals: Vec::new(),
            transactions: HashMap::new(),
            paging: HashMap::new(),
            ingestions: Vec::new(),
            bodies: Vec::new(),
            requests: Vec::new(),
            calls: Vec::new(),
            arrivals: Vec::new(),
            faults: Vec::new(),
            async_refusals: Vec::new(),
            pending_row_shape: PendingRowShape::default(),
        };
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                in_flight: InFlight::default(),
            }),
        }
    }

    pub fn config(&self) -> &PingSimConfig {
        &self.inner.config
    }

    /// Count one call of `kind` (`retrieve`, `ingest`, `asyncdata`,
    /// `checkstatus`) for a shipping process, once the body named it.
    pub(super) fn count_call(&self, kind: &str, shipping_process_id: &str) {
        self.lock()
            .calls
            .push(format!("{kind} {shipping_process_id}"));
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not wedge every later request.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(super) fn new_interop_referral(n: usize) -> InteropReferralState {
    InteropReferralState {
        id: new_guid(),
        number: format!("REF-IOP-DAD-{n:09}"),
        status: INTEROP_STATUS_NEW,
        offline_id: None,
        org_referral_id: None,
        external_id: None,
        external_guid: None,
        rejection_reason_name: None,
        rejection_comment: None,
        comments: Vec::new(),
        fields: Vec::new(),
    }
}

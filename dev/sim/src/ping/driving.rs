//! Driving and inspecting the simulator from tests: seeding, inspection, knobs.

use std::time::{Duration, Instant};

use super::faults::{Fault, FaultKind};
use super::model::{
    InteropReferralState, InterventionState, PendingRowShape, ReceivedBody, ReceivedIngestion,
    ReceivedRequest, SimIntervention,
};
use super::state::{new_guid, new_interop_referral, today, Delivery, PingSim, StoredIntervention};

impl PingSim {
    // ----- seeding and driving -------------------------------------------------

    /// Seed an intervention, queued as a pending delivery (SHP-2747). An
    /// intervention with the same `lpinterventionid` is replaced. Returns the id.
    pub fn add_intervention(&self, intervention: SimIntervention) -> String {
        let id = intervention.lpinterventionid.clone();
        let stored = StoredIntervention {
            delivery: Some(Delivery {
                delivery_id: new_guid(),
                status_date: intervention.start_date.clone(),
            }),
            transfer_status: None,
            // proGres stamps the transfer status date when it queues the delivery (example 15).
            transfer_status_date: Some(intervention.start_date.clone()),
            primero_id: None,
            primero_caseworker: None,
            comments: Vec::new(),
            status_writes: 0,
            spec: intervention,
        };
        let mut st = self.lock();
        match st.intervention_mut(&id) {
            Some(existing) => *existing = stored,
            None => {
                let at = st.interventions.len();
                st.intervention_index.insert(id.clone(), at);
                st.interventions.push(stored);
            }
        }
        id
    }

    /// Queue an intervention again (proGres re-sending it). False if unknown.
    pub fn requeue_intervention(&self, lpinterventionid: &str) -> bool {
        let mut st = self.lock();
        let Some(i) = st.intervention_mut(lpinterventionid) else {
            return false;
        };
        i.delivery = Some(Delivery {
            delivery_id: new_guid(),
            status_date: today(),
        });
        true
    }

    pub fn intervention_state(&self, lpinterventionid: &str) -> Option<InterventionState> {
        self.lock()
            .intervention(lpinterventionid)
            .map(StoredIntervention::state)
    }

    /// The written `progres_primerotransferstatus`, if any.
    pub fn transfer_status(&self, lpinterventionid: &str) -> Option<String> {
        self.intervention_state(lpinterventionid)
            .and_then(|s| s.transfer_status)
    }

    /// Ids in the SHP-2747 queue, in seeding order.
    pub fn pending_intervention_ids(&self) -> Vec<String> {
        self.lock()
            .interventions
            .iter()
            .filter(|i| i.delivery.is_some())
            .map(|i| i.spec.lpinterventionid.clone())
            .collect()
    }

    /// Seed an interoperability referral as if SHP-2731 had created it.
    pub fn add_interop_referral(
        &self,
        offline_id: impl Into<String>,
        org_referral_id: impl Into<String>,
    ) -> String {
        let mut st = self.lock();
        let referral = new_interop_referral(st.interop_referrals.len() + 1);
        let id = referral.id.clone();
        st.interop_referrals.push(InteropReferralState {
            offline_id: Some(offline_id.into()),
            org_referral_id: Some(org_referral_id.into()),
            ..referral
        });
        id
    }

    /// Record a proGres decision on an interoperability referral. False if unknown.
    pub fn decide_interop_referral(
        &self,
        id: &str,
        status: u32,
        rejection_reason_name: Option<&str>,
        rejection_comment: Option<&str>,
    ) -> bool {
        let mut st = self.lock();
        let Some(r) = st.interop_referrals.iter_mut().find(|r| r.id == id) else {
            return false;
        };
        r.status = status;
        r.rejection_reason_name = rejection_reason_name.map(str::to_string);
        r.rejection_comment = rejection_comment.map(str::to_string);
        true
    }

    pub fn interop_referral(&self, id: &str) -> Option<InteropReferralState> {
        self.lock()
            .interop_referrals
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    pub fn interop_referrals(&self) -> Vec<InteropReferralState> {
        self.lock().interop_referrals.clone()
    }

    // ----- inspection ----------------------------------------------------------

    /// Every ingestion record received (sync and async), in order.
    pub fn ingestion_records(&self) -> Vec<ReceivedIngestion> {
        self.lock().ingestions.clone()
    }

    /// Raw JSON bodies of ingestion and check-status requests, in order.
    pub fn ingestion_bodies(&self) -> Vec<ReceivedBody> {
        self.lock().bodies.clone()
    }

    /// Every request received, with the status it got.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock().requests.clone()
    }

    /// API calls so far by kind and shipping process, e.g.
    /// `"retrieve SHP-2358"`, `"ingest SHP-2748"`, `"asyncdata SHP-2731"`,
    /// `"checkstatus SHP-2731"`, and `"token"` for the token service: what
    /// the benchmark counts per delivered referral.
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for call in &self.lock().calls {
            *counts.entry(call.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The API calls [`call_counts`](Self::call_counts) counts, in the
    /// order they arrived (`"token"`, `"retrieve SHP-2747"`, …).
    pub fn calls_in_order(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Requests received on exactly this path.
    pub fn request_count(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Requests on `path` answered with `status`.
    pub fn status_count(&self, path: &str, status: u16) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path && r.status == status)
            .count()
    }

    pub fn tokens_issued(&self) -> usize {
        self.lock().tokens_issued
    }

    // ----- knobs ---------------------------------------------------------------

    /// Invalidate every issued token now (server-side early expiry).
    pub fn expire_all_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// `expires_in` of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().token_ttl = ttl;
    }

    /// The columns of the SHP-2747 rows served from now on.
    pub fn set_pending_row_shape(&self, shape: PendingRowShape) {
        self.lock().pending_row_shape = shape;
    }

    /// Rows per page for retrieves started from now on.
    pub fn set_page_size(&self, rows: usize) {
        self.lock().page_size = rows.max(1);
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The next `count` requests whose path starts with `path_prefix` are
    /// answered with `status` and not processed.
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

    /// When each request arrived, in order (for rate-limit checks).
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }

    /// proGres refuses the next `count` async ingestion records: the
    /// ingestion is accepted (a transaction id is returned) but check status
    /// reports `Failed` with `message`, and no interoperability referral is created.
    pub fn refuse_next_async_records(&self, count: usize, message: &str) {
        self.lock()
            .async_refusals
            .extend(std::iter::repeat_n(message.to_string(), count));
    }
}

//! [`Monitored`]: a store that checks the database before each use and
//! keeps the last failure, for `/readyz` and `bridge_store_errors_total`.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Alert, AuditEntry, AuditFilter, AuditRecord, AuditVerification, ClaimedMessage, DeadLetter,
    Delivery, Fence, Holder, InboxMessage, Lease, RecordRow, RunRow, Store, StoreError,
    WriterLease,
};

/// The last failure not yet followed by a success that clears it.
#[derive(Debug, Clone, Copy)]
struct Fault {
    code: &'static str,
    /// A failed write is cleared only by a successful write (reads keep
    /// working on a full disk).
    on_write: bool,
}

/// Wraps a store: every call first checks that the database is still the
/// one opened ([`Store::verify`]), so nothing is written to (or read from) a
/// deleted or replaced file; every failure is counted by reason code and
/// kept as the store's [`Store::fault`] until a later success clears it.
pub struct Monitored<S> {
    inner: S,
    fault: Mutex<Option<Fault>>,
}

impl<S: Store> Monitored<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            fault: Mutex::new(None),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn set_fault(&self, value: Option<Fault>) {
        match self.fault.lock() {
            Ok(mut g) => *g = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }

    fn current(&self) -> Option<Fault> {
        match self.fault.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    async fn call<T>(
        &self,
        write: bool,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = match self.inner.verify().await {
            Ok(()) => op.await,
            Err(e) => Err(e),
        };
        // A write that failed with a plain I/O error on a disk (or file
        // size limit) that is full is a full store: say so.
        let result = match result {
            Err(StoreError::Database(e)) if write => match self.inner.space_problem() {
                Some(why) => Err(StoreError::Full(format!("{why}: {e}"))),
                None => Err(StoreError::Database(e)),
            },
            other => other,
        };
        match &result {
            // A fenced write is this replica's lost lease, not a store fault.
            Err(StoreError::Fenced(_)) => {}
            Err(e) => {
                bridge_telemetry::metrics().store_error(e.code());
                self.set_fault(Some(Fault {
                    code: e.code(),
                    on_write: write,
                }));
            }
            Ok(_) => {
                if self.current().is_some_and(|f| write || !f.on_write) {
                    self.set_fault(None);
                }
            }
        }
        result
    }

    async fn read<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.call(false, op).await
    }

    async fn write<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.call(true, op).await
    }
}

#[async_trait]
impl<S: Store> Store for Monitored<S> {
    async fn acquire_writer(&self, holder: &Holder) -> Result<WriterLease, StoreError> {
        self.inner.acquire_writer(holder).await
    }

    async fn verify(&self) -> Result<(), StoreError> {
        self.read(async { Ok(()) }).await
    }

    fn fault(&self) -> Option<&'static str> {
        self.current().map(|f| f.code)
    }

    async fn cursor(&self, flow: &str) -> Result<Option<String>, StoreError> {
        self.read(self.inner.cursor(flow)).await
    }

    async fn set_cursor(&self, flow: &str, value: &str) -> Result<(), StoreError> {
        self.write(self.inner.set_cursor(flow, value)).await
    }

    async fn delivery(&self, flow: &str, key: &str) -> Result<Option<Delivery>, StoreError> {
        self.read(self.inner.delivery(flow, key)).await
    }

    async fn deliveries(
        &self,
        flow: &str,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, Delivery>, StoreError> {
        self.read(self.inner.deliveries(flow, keys)).await
    }

    async fn record_delivery(
        &self,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(
            self.inner
                .record_delivery(flow, key, fingerprint, target_id),
        )
        .await
    }

    async fn delivery_keys(
        &self,
        flow: &str,
        fingerprint: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.read(self.inner.delivery_keys(flow, fingerprint)).await
    }

    async fn case_shared(&self, case_id: &str, flow: &str) -> Result<(), StoreError> {
        self.write(self.inner.case_shared(case_id, flow)).await
    }

    async fn consent_lost(
        &self,
        case_id: &str,
        flow: &str,
        run_id: &str,
    ) -> Result<Option<Alert>, StoreError> {
        self.write(self.inner.consent_lost(case_id, flow, run_id))
            .await
    }

    async fn shared_cases(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.read(self.inner.shared_cases()).await
    }

    async fn consent_present(&self, case_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.consent_present(case_id)).await
    }

    async fn alerts_due(&self, at: &str, limit: i64) -> Result<Vec<Alert>, StoreError> {
        self.read(self.inner.alerts_due(at, limit)).await
    }

    async fn alerts(&self, pending: bool) -> Result<Vec<Alert>, StoreError> {
        self.read(self.inner.alerts(pending)).await
    }

    async fn alert_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.write(self.inner.alert_delivered(id)).await
    }

    async fn alert_retry(
        &self,
        id: i64,
        next_attempt_at: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        self.write(self.inner.alert_retry(id, next_attempt_at, error))
            .await
    }

    async fn inbox_reseal(&self, id: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        self.write(self.inner.inbox_reseal(id, old, new)).await
    }

    async fn inbox_all(&self) -> Result<Vec<InboxMessage>, StoreError> {
        self.read(self.inner.inbox_all()).await
    }

    async fn inbox_put(
        &self,
        id: &str,
        kind: &str,
        api_key_id: &str,
        sealed_body: &[u8],
    ) -> Result<(), StoreError> {
        self.write(self.inner.inbox_put(id, kind, api_key_id, sealed_body))
            .await
    }

    async fn inbox_pending(&self) -> Result<Vec<InboxMessage>, StoreError> {
        self.read(self.inner.inbox_pending()).await
    }

    async fn inbox_failed(
        &self,
        id: &str,
        reason: &str,
        retry_after: Duration,
    ) -> Result<(), StoreError> {
        self.write(self.inner.inbox_failed(id, reason, retry_after))
            .await
    }

    async fn inbox_delete(&self, id: &str) -> Result<(), StoreError> {
        self.write(self.inner.inbox_delete(id)).await
    }

    async fn inbox_set_dead(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        self.write(self.inner.inbox_set_dead(id, reason)).await
    }

    async fn inbox_revive(&self, id: &str) -> Result<bool, StoreError> {
        self.write(self.inner.inbox_revive(id)).await
    }

    async fn lease_acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.write(self.inner.lease_acquire(name, owner, ttl)).await
    }

    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        self.write(self.inner.lease_renew(lease, ttl)).await
    }

    async fn lease_release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.write(self.inner.lease_release(lease)).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.read(self.inner.leases()).await
    }

    async fn set_cursor_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.write(self.inner.set_cursor_fenced(fence, flow, value))
            .await
    }

    async fn record_delivery_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        key: &str,
        fingerprint: &str,
        target_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(
            self.inner
                .record_delivery_fenced(fence, flow, key, fingerprint, target_id),
        )
        .await
    }

    async fn record_deliveries_fenced(
        &self,
        fence: &Fence,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        self.write(self.inner.record_deliveries_fenced(fence, flow, deliveries))
            .await
    }

    async fn inbox_claim(
        &self,
        owner: &str,
        ttl: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        self.write(self.inner.inbox_claim(owner, ttl, limit)).await
    }

    async fn slot_acquire(
        &self,
        scope: &str,
        slots: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<u32>, StoreError> {
        self.write(self.inner.slot_acquire(scope, slots, owner, ttl))
            .await
    }

    async fn slot_release(&self, scope: &str, slot: u32, owner: &str) -> Result<(), StoreError> {
        self.write(self.inner.slot_release(scope, slot, owner))
            .await
    }

    async fn rate_reserve(&self, scope: &str, interval: Duration) -> Result<Duration, StoreError> {
        self.write(self.inner.rate_reserve(scope, interval)).await
    }

    async fn inbox_renew(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError> {
        self.write(self.inner.inbox_renew(fence, ttl)).await
    }

    async fn inbox_states(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(self.inner.inbox_states()).await
    }

    async fn run_started(&self, run: &RunRow) -> Result<(), StoreError> {
        self.write(self.inner.run_started(run)).await
    }

    async fn run_finished(&self, run: &RunRow, records: &[RecordRow]) -> Result<(), StoreError> {
        self.write(self.inner.run_finished(run, records)).await
    }

    async fn record_deliveries(
        &self,
        flow: &str,
        deliveries: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        self.write(self.inner.record_deliveries(flow, deliveries))
            .await
    }

    async fn cases_shared(&self, case_ids: &[String], flow: &str) -> Result<(), StoreError> {
        self.write(self.inner.cases_shared(case_ids, flow)).await
    }

    async fn record_outcomes_append(&self, records: &[RecordRow]) -> Result<(), StoreError> {
        self.write(self.inner.record_outcomes_append(records)).await
    }

    async fn interrupt_running(&self) -> Result<u64, StoreError> {
        self.write(self.inner.interrupt_running()).await
    }

    async fn interrupt_flow_runs(&self, flow: &str) -> Result<u64, StoreError> {
        self.write(self.inner.interrupt_flow_runs(flow)).await
    }

    async fn runs(&self, flow: Option<&str>, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        self.read(self.inner.runs(flow, limit)).await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        self.read(self.inner.run(id)).await
    }

    async fn run_records(&self, run_id: &str) -> Result<Vec<RecordRow>, StoreError> {
        self.read(self.inner.run_records(run_id)).await
    }

    async fn last_run_started(&self, flow: &str) -> Result<Option<String>, StoreError> {
        self.read(self.inner.last_run_started(flow)).await
    }

    async fn attempt_failed(
        &self,
        flow: &str,
        source_id: &str,
        code: &str,
    ) -> Result<i64, StoreError> {
        self.write(self.inner.attempt_failed(flow, source_id, code))
            .await
    }

    async fn attempts_all(&self, flow: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(self.inner.attempts_all(flow)).await
    }

    async fn attempts(&self, flow: &str, source_id: &str) -> Result<i64, StoreError> {
        self.read(self.inner.attempts(flow, source_id)).await
    }

    async fn clear_attempts(&self, flow: &str, source_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.clear_attempts(flow, source_id)).await
    }

    async fn dead_letter_put(
        &self,
        flow: &str,
        source_id: &str,
        reason_code: &str,
        reason: &str,
        attempts: i64,
        cursor_hint: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(self.inner.dead_letter_put(
            flow,
            source_id,
            reason_code,
            reason,
            attempts,
            cursor_hint,
        ))
        .await
    }

    async fn dead_letter_find(
        &self,
        flow: &str,
        source_id: &str,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.read(self.inner.dead_letter_find(flow, source_id))
            .await
    }

    async fn dead_letter_get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.read(self.inner.dead_letter_get(id)).await
    }

    async fn dead_letters(&self, flow: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(self.inner.dead_letters(flow)).await
    }

    async fn dead_letter_release(&self, id: i64) -> Result<bool, StoreError> {
        self.write(self.inner.dead_letter_release(id)).await
    }

    async fn audit_append(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        // A refused entry is the caller's mistake, not a failing database:
        // checked before it can mark the store unhealthy.
        crate::audit::check_all(entries)?;
        self.write(self.inner.audit_append(entries)).await
    }

    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(self.inner.audit_list(filter)).await
    }

    async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        self.read(self.inner.audit_verify()).await
    }

    async fn audit_prune(&self, before: &str) -> Result<u64, StoreError> {
        self.write(self.inner.audit_prune(before)).await
    }
}

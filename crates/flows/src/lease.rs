//! Which replica runs a flow: a run holds the flow's lease in the state
//! database for its whole length, renewing it as it goes. Its cursor commits
//! and delivery records are fenced by the lease's token
//! ([`bridge_store::Fenced`]), and it stops starting records as soon as it
//! cannot be sure it still holds the lease, before another replica may take
//! it over.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge_store::{Fence, Lease, Store, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// This process as one replica of a deployment.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Names the holder of leases and claims: `[cluster] replica`, else
    /// `<host>-<pid>-<4 random hex>` (unique across restarts).
    pub id: String,
    /// How long a lease or claim outlives its holder's last renewal: how
    /// long a dead replica's work waits before another takes it over.
    pub lease_ttl: Duration,
    /// The flows this replica is running now. A lease names its replica, not
    /// its run, so the replica itself keeps a second run of a flow (a replay,
    /// a cursor move beside a scheduled run) from sharing the first's lease.
    running: Arc<Mutex<HashSet<String>>>,
}

impl PartialEq for Replica {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.lease_ttl == other.lease_ttl
    }
}

impl Eq for Replica {}

/// Default [`Replica::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

impl Replica {
    pub fn new(name: Option<&str>, lease_ttl: Duration) -> Self {
        let id = match name {
            Some(name) => name.to_string(),
            None => {
                let holder = bridge_store::Holder::current();
                let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
                format!("{}-{}-{suffix}", holder.host, holder.pid)
            }
        };
        Self {
            id,
            lease_ttl,
            running: Arc::default(),
        }
    }

    /// How often a held lease is renewed: three times per ttl, so two
    /// renewals may fail before it is at risk.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// Until when a lease or claim confirmed by a request sent at `asked`
    /// is surely still held, on this process's clock: the database counted
    /// its ttl from a moment after `asked`; half a renewal period is kept
    /// back for the time the holder needs to stop.
    pub fn held_until(&self, asked: std::time::Instant) -> std::time::Instant {
        asked + self.lease_ttl.saturating_sub(self.renew_every() / 2)
    }
}

impl Default for Replica {
    fn default() -> Self {
        Self::new(None, DEFAULT_LEASE_TTL)
    }
}

/// Whether a lease or claim can still be counted on: shared by its keeper,
/// which renews it, and the work done under it, which checks it before each
/// partner write. A write made after the holder was suspended (or cut off
/// from the database) past the ttl could follow another replica's, and rest
/// on a search answered before the pause: a second case for one child.
#[derive(Clone, Debug, Default)]
pub struct Holding {
    lost: CancellationToken,
    /// Until when it is surely held, on this process's clock; `None`: no
    /// bound (work done outside leases and claims).
    held_until: Option<Arc<Mutex<std::time::Instant>>>,
}

impl Holding {
    /// Surely held until `until` (this process's clock), unless renewed.
    pub fn until(until: std::time::Instant) -> Self {
        Self {
            lost: CancellationToken::new(),
            held_until: Some(Arc::new(Mutex::new(until))),
        }
    }

    /// A renewal confirmed it until `until`; a late answer never moves it
    /// back.
    pub fn renewed(&self, until: std::time::Instant) {
        if let Some(held) = &self.held_until {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            *held = (*held).max(until);
        }
    }

    /// A renewal found it taken by another replica (or gone), or none came
    /// in time.
    pub fn declare_lost(&self) {
        self.lost.cancel();
    }

    /// Until when it is surely held, unless renewed; `None`: no bound.
    pub fn held_until(&self) -> Option<std::time::Instant> {
        self.held_until
            .as_ref()
            .map(|until| *until.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether [`Holding::declare_lost`] was called.
    pub fn declared_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether it can no longer be counted on: declared lost, or past the
    /// time it was surely held. Checked on this process's clock, so a process
    /// resumed after a pause sees it before its renewal task has run; a
    /// later renewal that succeeds shows nobody took it meanwhile.
    pub fn is_lost(&self) -> bool {
        self.declared_lost()
            || self
                .held_until()
                .is_some_and(|until| std::time::Instant::now() >= until)
    }
}

/// Why a flow did not run on this replica.
#[derive(Debug, thiserror::Error)]
pub enum NotRun {
    /// Another replica holds the flow's lease.
    #[error("flow {flow} is being run by replica {owner} (lease until {until})")]
    HeldElsewhere {
        flow: String,
        owner: String,
        until: String,
    },
    /// This replica is running the flow already.
    #[error("flow {flow} is already running on this replica")]
    RunningHere { flow: String },
    /// A run of this schedule slot was already started (by any replica).
    #[error("flow {flow} already ran for its {due} slot (run started {started})")]
    AlreadyRan {
        flow: String,
        due: String,
        started: String,
    },
}

/// A flow's lease, held and renewed for the length of one run.
pub struct FlowLease {
    store: Arc<dyn Store>,
    lease: Arc<Mutex<Lease>>,
    stop: CancellationToken,
    holding: Holding,
    keeper: tokio::task::JoinHandle<()>,
    /// Dropped last: the flow is free on this replica once the lease is.
    _running: RunningHere,
}

/// A flow marked running on its replica while this lives.
struct RunningHere {
    flows: Arc<Mutex<HashSet<String>>>,
    flow: String,
}

impl RunningHere {
    fn mark(replica: &Replica, flow: &str) -> Option<Self> {
        let mut flows = replica.running.lock().unwrap_or_else(|p| p.into_inner());
        flows.insert(flow.to_string()).then(|| Self {
            flows: replica.running.clone(),
            flow: flow.to_string(),
        })
    }
}

impl Drop for RunningHere {
    fn drop(&mut self) {
        self.flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.flow);
    }
}

impl FlowLease {
    /// Take `flow`'s lease for `replica`; [`NotRun::HeldElsewhere`] when
    /// another replica holds it. The run's stop token is a child of `parent`
    /// and is also cancelled once the lease is lost or can no longer be
    /// confirmed.
    pub async fn take(
        store: Arc<dyn Store>,
        replica: &Replica,
        flow: &str,
        parent: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let running = RunningHere::mark(replica, flow).ok_or_else(|| NotRun::RunningHere {
            flow: flow.to_string(),
        })?;
        let name = Lease::flow_name(flow);
        let asked = Instant::now();
        let Some(lease) = store
            .lease_acquire(&name, &replica.id, replica.lease_ttl)
            .await?
        else {
            let holder = store.leases().await?.into_iter().find(|l| l.name == name);
            return Err(NotRun::HeldElsewhere {
                flow: flow.to_string(),
                owner: holder
                    .as_ref()
                    .map_or_else(|| "unknown".into(), |l| l.owner.clone()),
                until: holder.map_or_else(String::new, |l| l.expires_at),
            }
            .into());
        };
        tracing::debug!(flow, lease_token = lease.token, "flow lease taken");
        bridge_telemetry::metrics().set_lease_held(&name, true);
        let lease = Arc::new(Mutex::new(lease));
        let stop = parent.child_token();
        let holding = Holding::until(replica.held_until(asked.into_std()));
        let keeper = tokio::spawn(keep(
            store.clone(),
            lease.clone(),
            replica.clone(),
            Lost {
                stop: stop.clone(),
                holding: holding.clone(),
            },
        ));
        Ok(Self {
            store,
            lease,
            stop,
            holding,
            keeper,
            _running: running,
        })
    }

    /// The fence of this run's writes.
    pub fn fence(&self) -> Fence {
        self.current().fence()
    }

    /// The lease's token: stored with the run, it tells the run of a live
    /// holder from one a dead or superseded replica left `running`.
    pub fn token(&self) -> i64 {
        self.current().token
    }

    /// Cancelled on shutdown and when the lease is lost: the run finishes
    /// the records in flight and starts no more.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Whether the lease can still be counted on, for checks before each
    /// partner write.
    pub fn holding(&self) -> &Holding {
        &self.holding
    }

    /// The lease was lost (or could not be confirmed) during the run.
    pub fn lost(&self) -> bool {
        self.holding.declared_lost()
    }

    fn current(&self) -> Lease {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stop renewing and give the lease up, so another replica can take the
    /// flow's next run at once.
    pub async fn release(self) {
        self.keeper.abort();
        let lease = self.current();
        bridge_telemetry::metrics().set_lease_held(&lease.name, false);
        if let Err(e) = self.store.lease_release(&lease).await {
            tracing::warn!(lease = %lease.name, error = %e, "cannot release the lease; it expires on its own");
        }
    }
}

impl Drop for FlowLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renew the lease every third of its ttl. The run is stopped when a renewal
/// says it was lost, or when no renewal succeeded for long enough that the
/// lease may have expired: counted from when the last successful renewal was
/// asked, since the database measured its ttl from a moment after that (the
/// holding's [`Holding::held_until`]).
async fn keep(store: Arc<dyn Store>, lease: Arc<Mutex<Lease>>, replica: Replica, on_loss: Lost) {
    let stop = on_loss.stop.clone();
    let every = replica.renew_every();
    // A lease's holding is always bounded (`FlowLease::take`).
    while let Some(until) = on_loss.holding.held_until() {
        let valid_until = Instant::from_std(until);
        let next = (Instant::now() + every).min(valid_until);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        if Instant::now() >= valid_until {
            let name = lease.lock().unwrap_or_else(|p| p.into_inner()).name.clone();
            tracing::warn!(lease = %name, "the lease could not be renewed in time: the run stops starting records");
            on_loss.declare(&name);
            return;
        }
        let held = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let asked = Instant::now();
        match store.lease_renew(&held, replica.lease_ttl).await {
            Ok(Some(renewed)) => {
                on_loss
                    .holding
                    .renewed(replica.held_until(asked.into_std()));
                *lease.lock().unwrap_or_else(|p| p.into_inner()) = renewed;
            }
            Ok(None) => {
                tracing::warn!(lease = %held.name, lease_token = held.token, "the lease was taken over by another replica: the run stops starting records");
                on_loss.declare(&held.name);
                return;
            }
            Err(e) => log_renew_error(&held, &e),
        }
    }
}

/// What a lost lease does: the run stops starting records.
struct Lost {
    stop: CancellationToken,
    holding: Holding,
}

impl Lost {
    fn declare(&self, lease: &str) {
        bridge_telemetry::metrics().lease_lost(lease);
        self.holding.declare_lost();
        self.stop.cancel();
    }
}

fn log_renew_error(lease: &Lease, e: &StoreError) {
    tracing::warn!(lease = %lease.name, error = %e, "cannot renew the lease; trying again");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_store::SqliteStore;

    fn not_run(r: anyhow::Result<FlowLease>) -> NotRun {
        match r {
            Ok(_) => panic!("the lease was taken twice"),
            Err(e) => e.downcast::<NotRun>().expect("a NotRun"),
        }
    }

    #[tokio::test]
    async fn one_run_of_a_flow_per_replica_and_per_deployment() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let stop = CancellationToken::new();
        let a = Replica::new(Some("a"), DEFAULT_LEASE_TTL);
        let b = Replica::new(Some("b"), DEFAULT_LEASE_TTL);
        let first = FlowLease::take(store.clone(), &a, "ping-1.1", &stop)
            .await
            .unwrap();
        // The same replica: its lease would be shared, so it is refused here.
        let again = FlowLease::take(store.clone(), &a.clone(), "ping-1.1", &stop).await;
        assert!(matches!(not_run(again), NotRun::RunningHere { .. }));
        // Another replica: held elsewhere, naming the holder.
        match not_run(FlowLease::take(store.clone(), &b, "ping-1.1", &stop).await) {
            NotRun::HeldElsewhere { owner, .. } => assert_eq!(owner, "a"),
            other => panic!("{other}"),
        }
        // Another flow on the same replica is free.
        let other = FlowLease::take(store.clone(), &a, "ping-2.1", &stop)
            .await
            .unwrap();
        first.release().await;
        other.release().await;
        // Released: the flow is free on this replica and on the others.
        let by_b = FlowLease::take(store.clone(), &b, "ping-1.1", &stop)
            .await
            .unwrap();
        by_b.release().await;
        let by_a = FlowLease::take(store.clone(), &a, "ping-1.1", &stop)
            .await
            .unwrap();
        drop(by_a);
        // Dropped without release (a run that panicked): free here at once.
        assert!(a.running.lock().unwrap().is_empty());
    }
}

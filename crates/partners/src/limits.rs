//! Per-partner limits: how many calls may be in flight at once and how fast
//! new calls may start. A 429 with `Retry-After` also pauses new calls to the
//! partner until it passes.
//!
//! A permit covers one HTTP exchange (request sent, answer read), not a token
//! login and not the wait between retries.
//!
//! # Across replicas
//!
//! Alone, a [`Limiter`] holds its limits in one process. Given a
//! [`ClusterLimits`] ([`Limiter::set_cluster`], the clients'
//! `with_cluster_limits`), the same limits hold for every replica sharing the
//! state database: a call takes its local permit, then one of the partner's
//! `max_in_flight` cluster slots (polling with a short backoff while all are
//! taken), then reserves its start on the partner's shared rate (GCRA) and
//! waits for it. The slot is given back when the permit is dropped, also
//! when the call's future is cancelled; a slot whose replica died comes back
//! when its time to live runs out (longer than any exchange the client
//! allows).
//!
//! When the shared store cannot be used (an error, or no answer within
//! [`STORE_TIMEOUT`]) the limiter fails open: the call goes ahead under the
//! local limits, which still bound each replica, and the replica keeps to
//! its local limits for [`LOCAL_ONLY_FOR`] before asking the store again
//! (a warning, and `bridge_partner_limits_local_only_total`). Failing the
//! call instead would blame the partner for our own database (`/readyz`,
//! retries, held records), while a replica without its database cannot
//! record deliveries or move cursors and so soon stops working anyway.
//!
//! The 429 pause stays local: the replica that got the 429 pauses; the
//! others keep to the shared slots and rate and get their own 429 if the
//! partner is still overloaded.

use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tokio::sync::{oneshot, Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Longest wait for one answer of the shared store before failing open.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(3);
/// After the shared store failed: local limits only for this long.
pub const LOCAL_ONLY_FOR: Duration = Duration::from_secs(15);
/// Backoff between two looks for a free cluster slot: doubles from the
/// first to the largest, with jitter.
const SLOT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const SLOT_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Limits of one partner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartnerLimits {
    /// Calls in flight at once (at least 1).
    pub max_in_flight: usize,
    /// Calls started per second at most; `None` for no limit.
    pub rate_per_sec: Option<f64>,
}

impl Default for PartnerLimits {
    /// 8 in flight, no rate limit.
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            rate_per_sec: None,
        }
    }
}

impl PartnerLimits {
    /// The smallest gap between two call starts, when rate limited.
    pub fn interval(&self) -> Option<Duration> {
        let rate = self.rate_per_sec.filter(|r| r.is_finite() && *r > 0.0)?;
        Duration::try_from_secs_f64(1.0 / rate).ok()
    }
}

/// The shared store could not be used (its reason code and message: ids only).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ClusterLimitsError(pub String);

/// Call slots and start rates shared by every replica, per scope (a partner
/// deployment: see [`cluster_scope`]). The service implements it over the
/// state database; the owner of a slot is the replica.
#[async_trait]
pub trait ClusterLimits: Send + Sync + 'static {
    /// Take one of `slots` call slots of `scope` until `ttl` from now
    /// (unless released before); `None` while all are taken.
    async fn try_take_slot(
        &self,
        scope: &str,
        slots: u32,
        ttl: Duration,
    ) -> Result<Option<u32>, ClusterLimitsError>;
    /// Give back a slot this replica took.
    async fn release_slot(&self, scope: &str, slot: u32) -> Result<(), ClusterLimitsError>;
    /// Reserve the next start of `scope` at one per `interval`; how long to
    /// wait before starting (zero: now).
    async fn reserve_start(
        &self,
        scope: &str,
        interval: Duration,
    ) -> Result<Duration, ClusterLimitsError>;
}

/// The scope of a partner deployment: `<system> <URL>` for each URL given,
/// without credentials, query or fragment; `with_path: false` keeps the
/// origin only. Two deployments' different servers never share a limit.
pub fn cluster_scope<'a>(
    system: &str,
    urls: impl IntoIterator<Item = &'a url::Url>,
    with_path: bool,
) -> String {
    let mut parts: Vec<String> = urls
        .into_iter()
        .map(|url| {
            let origin = url.origin().ascii_serialization();
            if with_path {
                format!("{origin}{}", url.path())
            } else {
                origin
            }
        })
        .collect();
    parts.sort();
    parts.dedup();
    std::iter::once(system.to_string())
        .chain(parts)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A limiter's binding to the shared limits.
#[derive(Clone)]
struct Cluster {
    shared: Arc<dyn ClusterLimits>,
    /// `primero` | `ping` | `dtp` (logs and metrics).
    system: &'static str,
    scope: Arc<str>,
    /// The longest one exchange may take (the client's HTTP timeout).
    longest_exchange: Duration,
    store_timeout: Duration,
    local_only_for: Duration,
    /// After a failure of the shared store: local limits only until then.
    local_only_until: Arc<StdMutex<Option<Instant>>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("system", &self.system)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Whether to ask the shared store now (not within a fail-open spell).
    fn usable(&self) -> bool {
        let mut until = self
            .local_only_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(t) if t > Instant::now() => false,
            _ => {
                *until = None;
                true
            }
        }
    }

    /// The store failed: local limits only for a while (one warning per spell).
    fn fail_open(&self, err: &ClusterLimitsError) {
        let mut until = self
            .local_only_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if until.is_none() {
            tracing::warn!(
                system = self.system,
                error = %err,
                local_only_secs = self.local_only_for.as_secs(),
                "cluster-wide partner limits unavailable: this replica keeps to its own limits for now"
            );
        }
        *until = Some(Instant::now() + self.local_only_for);
    }

    /// Take a slot, waiting while all are taken. The store call runs in its
    /// own task: when the caller is gone (cancelled, or it timed out) before
    /// the answer, a slot it was given is released at once.
    async fn take_slot(
        &self,
        slots: u32,
        ttl: Duration,
    ) -> Result<ClusterSlot, ClusterLimitsError> {
        let mut backoff = SLOT_BACKOFF_FIRST;
        let mut waited = false;
        loop {
            let (tx, rx) = oneshot::channel();
            let (shared, scope) = (self.shared.clone(), self.scope.clone());
            tokio::spawn(async move {
                let taken = shared.try_take_slot(&scope, slots, ttl).await;
                if let Err(Ok(Some(slot))) = tx.send(taken) {
                    if let Err(err) = shared.release_slot(&scope, slot).await {
                        tracing::debug!(error = %err, "unused cluster slot not released: it expires");
                    }
                }
            });
            let taken = match tokio::time::timeout(self.store_timeout, rx).await {
                Ok(Ok(taken)) => taken?,
                Ok(Err(_)) => return Err(ClusterLimitsError("the slot request failed".into())),
                Err(_) => {
                    return Err(ClusterLimitsError(format!(
                        "no answer within {} ms",
                        self.store_timeout.as_millis()
                    )))
                }
            };
            if let Some(slot) = taken {
                return Ok(ClusterSlot {
                    shared: self.shared.clone(),
                    scope: self.scope.clone(),
                    slot,
                    timeout: self.store_timeout,
                });
            }
            if !waited {
                waited = true;
                bridge_telemetry::metrics().partner_slot_wait(self.system);
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(SLOT_BACKOFF_MAX);
        }
    }

    async fn reserve_start(&self, interval: Duration) -> Result<Duration, ClusterLimitsError> {
        match tokio::time::timeout(
            self.store_timeout,
            self.shared.reserve_start(&self.scope, interval),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ClusterLimitsError(format!(
                "no answer within {} ms",
                self.store_timeout.as_millis()
            ))),
        }
    }
}

/// Between half and all of `backoff`, so waiting replicas do not poll in step.
fn jitter(backoff: Duration) -> Duration {
    let nanos = u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
}

/// A cluster slot held by a call; released when dropped.
struct ClusterSlot {
    shared: Arc<dyn ClusterLimits>,
    scope: Arc<str>,
    slot: u32,
    timeout: Duration,
}

impl fmt::Debug for ClusterSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSlot")
            .field("scope", &self.scope)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        // Drop cannot wait: the release runs on its own. Without a runtime
        // (the process is ending) the slot's time to live frees it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, scope, slot, timeout) = (
            self.shared.clone(),
            self.scope.clone(),
            self.slot,
            self.timeout,
        );
        runtime.spawn(async move {
            match tokio::time::timeout(timeout, shared.release_slot(&scope, slot)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "cluster slot not released: it expires");
                }
                Err(_) => tracing::debug!("cluster slot release timed out: it expires"),
            }
        });
    }
}

/// The shared state enforcing [`PartnerLimits`]; one per client (clones of a
/// client share it).
#[derive(Debug)]
pub struct Limiter {
    limits: PartnerLimits,
    in_flight: Semaphore,
    interval: Option<Duration>,
    /// When the last call started (rate limit). Held while waiting for the
    /// next slot, so starts are spaced by at least `interval`.
    last_start: Mutex<Option<Instant>>,
    paused_until: StdMutex<Option<Instant>>,
    cluster: Option<Cluster>,
}

/// Held for the duration of one HTTP exchange. Its cluster slot (if any) is
/// dropped first.
#[derive(Debug)]
pub struct CallPermit<'a> {
    _slot: Option<ClusterSlot>,
    _permit: SemaphorePermit<'a>,
}

impl Limiter {
    pub fn new(limits: PartnerLimits) -> Self {
        let permits = limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            limits,
            in_flight: Semaphore::new(permits),
            interval: limits.interval(),
            last_start: Mutex::new(None),
            paused_until: StdMutex::new(None),
            cluster: None,
        }
    }

    /// A new limiter with `limits`, sharing `other`'s cluster binding.
    pub fn with_cluster_of(mut self, other: &Limiter) -> Self {
        self.cluster = other.cluster.clone();
        self
    }

    /// Hold the limits for the whole cluster: slots and rate of `scope`
    /// (see [`cluster_scope`]) in `shared`. `system` names the partner in
    /// logs and metrics; `longest_exchange` is the longest one HTTP exchange
    /// may take (the client's timeout): a slot lives longer than that, so a
    /// dead replica's slots come back.
    pub fn set_cluster(
        &mut self,
        shared: Arc<dyn ClusterLimits>,
        system: &'static str,
        scope: String,
        longest_exchange: Duration,
    ) {
        self.cluster = Some(Cluster {
            shared,
            system,
            scope: scope.into(),
            longest_exchange,
            store_timeout: STORE_TIMEOUT,
            local_only_for: LOCAL_ONLY_FOR,
            local_only_until: Arc::new(StdMutex::new(None)),
        });
    }

    pub fn limits(&self) -> &PartnerLimits {
        &self.limits
    }

    /// The cluster scope, when the limits hold for the whole cluster.
    pub fn cluster_scope(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| &*c.scope)
    }

    fn slots(&self) -> u32 {
        u32::try_from(self.limits.max_in_flight.max(1)).unwrap_or(u32::MAX)
    }

    /// How long a cluster slot lives unless released: twice the longest
    /// exchange, plus the longest wait for a rate slot (only slot holders
    /// reserve one), plus a second.
    pub fn slot_ttl(&self) -> Duration {
        let exchange = self
            .cluster
            .as_ref()
            .map_or(Duration::ZERO, |c| c.longest_exchange);
        let rate_wait = self
            .interval
            .map_or(Duration::ZERO, |i| i.saturating_mul(self.slots()));
        exchange
            .saturating_mul(2)
            .saturating_add(rate_wait)
            .saturating_add(Duration::from_secs(1))
    }

    /// Wait for a free slot (local, then cluster-wide), the end of any pause
    /// and the next rate slot (the cluster's, else the local one).
    pub async fn acquire(&self) -> CallPermit<'_> {
        loop {
            self.wait_for_pause().await;
            let permit = self
                .in_flight
                .acquire()
                .await
                .expect("the limiter never closes its semaphore");
            // A pause that began while we queued applies to us too.
            if self.pause_deadline().is_some() {
                drop(permit);
                continue;
            }
            let mut slot = None;
            if let Some(cluster) = &self.cluster {
                if cluster.usable() {
                    match cluster.take_slot(self.slots(), self.slot_ttl()).await {
                        Ok(taken) => slot = Some(taken),
                        Err(err) => cluster.fail_open(&err),
                    }
                    if self.pause_deadline().is_some() {
                        drop(slot);
                        drop(permit);
                        continue;
                    }
                }
                if slot.is_none() {
                    bridge_telemetry::metrics().partner_limits_local_only(cluster.system);
                }
            }
            match (&self.cluster, &slot, self.interval) {
                (Some(cluster), Some(_), Some(interval)) => {
                    match cluster.reserve_start(interval).await {
                        Ok(wait) => tokio::time::sleep(wait).await,
                        Err(err) => {
                            cluster.fail_open(&err);
                            bridge_telemetry::metrics().partner_limits_local_only(cluster.system);
                            self.pace_locally(interval).await;
                        }
                    }
                }
                (_, _, Some(interval)) => self.pace_locally(interval).await,
                (_, _, None) => {}
            }
            return CallPermit {
                _slot: slot,
                _permit: permit,
            };
        }
    }

    async fn pace_locally(&self, interval: Duration) {
        let mut last = self.last_start.lock().await;
        if let Some(previous) = *last {
            tokio::time::sleep_until(previous + interval).await;
        }
        *last = Some(Instant::now());
    }

    /// Hold new calls back for `wait` (a partner's `Retry-After`). Local to
    /// this replica.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn pause_deadline(&self) -> Option<Instant> {
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        match *paused {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                *paused = None;
                None
            }
        }
    }

    async fn wait_for_pause(&self) {
        while let Some(until) = self.pause_deadline() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Calls that could start now without waiting for a slot.
    pub fn available(&self) -> usize {
        self.in_flight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn defaults_and_interval() {
        let d = PartnerLimits::default();
        assert_eq!(d.max_in_flight, 8);
        assert_eq!(d.interval(), None);
        let r = PartnerLimits {
            max_in_flight: 1,
            rate_per_sec: Some(20.0),
        };
        assert_eq!(r.interval(), Some(Duration::from_millis(50)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let l = PartnerLimits {
                max_in_flight: 1,
                rate_per_sec: Some(bad),
            };
            assert_eq!(l.interval(), None, "{bad}");
        }
        // Zero in flight would deadlock; it means one.
        let l = Limiter::new(PartnerLimits {
            max_in_flight: 0,
            rate_per_sec: None,
        });
        assert_eq!(l.available(), 1);
    }

    #[test]
    fn a_scope_names_the_partner_and_its_server_without_secrets() {
        let primero = url::Url::parse("https://user:pw@primero.example.org/v2/?k=v#f").unwrap();
        assert_eq!(
            cluster_scope("primero", [&primero], true),
            "primero https://primero.example.org/v2/"
        );
        let dtp = [
            "https://dtp.example.org/api/A?code=secret",
            "https://dtp.example.org/api/B",
            "https://dtp.example.org:8443/api/C",
        ]
        .map(|u| url::Url::parse(u).unwrap());
        assert_eq!(
            cluster_scope("dtp", &dtp, false),
            "dtp https://dtp.example.org https://dtp.example.org:8443"
        );
    }

    #[tokio::test]
    async fn never_more_than_max_in_flight() {
        let limiter = Arc::new(Limiter::new(PartnerLimits {
            max_in_flight: 2,
            rate_per_sec: None,
        }));
        let now = Arc::new(AtomicUsize::new(0));
        let high = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (limiter, now, high) = (limiter.clone(), now.clone(), high.clone());
                tokio::spawn(async move {
                    let _permit = limiter.acquire().await;
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    high.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(high.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn rate_limit_spaces_starts_and_pause_holds_calls() {
        // Lower bounds only: a rate limiter never lets a call start early.
        let limiter = Limiter::new(PartnerLimits {
            max_in_flight: 8,
            rate_per_sec: Some(50.0),
        });
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            let _p = limiter.acquire().await;
            starts.push(Instant::now());
        }
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(20));
        }
        assert!(starts[4] - t0 >= Duration::from_millis(80));

        limiter.pause_for(Duration::from_millis(150));
        let before = Instant::now();
        let _p = limiter.acquire().await;
        assert!(Instant::now() - before >= Duration::from_millis(150));
    }

    /// The shared limits in memory, as the state database keeps them: slots
    /// with a time to live, and a GCRA start time per scope.
    #[derive(Default)]
    struct MemCluster {
        slots: StdMutex<std::collections::HashMap<(String, u32), Instant>>,
        tat: StdMutex<std::collections::HashMap<String, Instant>>,
        /// Every store call fails.
        failing: std::sync::atomic::AtomicBool,
        /// A slot request is answered this late.
        take_delay: StdMutex<Duration>,
        /// Slot requests, failed ones included.
        asks: AtomicUsize,
        /// Slot requests answered.
        takes: AtomicUsize,
    }

    impl MemCluster {
        fn held(&self) -> usize {
            let now = Instant::now();
            let slots = self.slots.lock().unwrap();
            slots.values().filter(|&&until| until > now).count()
        }

        fn check(&self) -> Result<(), ClusterLimitsError> {
            if self.failing.load(Ordering::SeqCst) {
                Err(ClusterLimitsError("store-unavailable".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl ClusterLimits for MemCluster {
        async fn try_take_slot(
            &self,
            scope: &str,
            slots: u32,
            ttl: Duration,
        ) -> Result<Option<u32>, ClusterLimitsError> {
            self.asks.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            self.takes.fetch_add(1, Ordering::SeqCst);
            let delay = *self.take_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let now = Instant::now();
            let mut held = self.slots.lock().unwrap();
            for slot in 0..slots {
                let key = (scope.to_string(), slot);
                if held.get(&key).is_none_or(|&until| until <= now) {
                    held.insert(key, now + ttl);
                    return Ok(Some(slot));
                }
            }
            Ok(None)
        }

        async fn release_slot(&self, scope: &str, slot: u32) -> Result<(), ClusterLimitsError> {
            self.check()?;
            self.slots
                .lock()
                .unwrap()
                .remove(&(scope.to_string(), slot));
            Ok(())
        }

        async fn reserve_start(
            &self,
            scope: &str,
            interval: Duration,
        ) -> Result<Duration, ClusterLimitsError> {
            self.check()?;
            let now = Instant::now();
            let mut tat = self.tat.lock().unwrap();
            let send_at = tat.get(scope).copied().unwrap_or(now).max(now);
            tat.insert(scope.to_string(), send_at + interval);
            Ok(send_at - now)
        }
    }

    /// `n` limiters as in `n` replicas, sharing `shared`.
    fn replicas(n: usize, limits: PartnerLimits, shared: &Arc<MemCluster>) -> Vec<Arc<Limiter>> {
        (0..n)
            .map(|_| {
                let mut limiter = Limiter::new(limits);
                limiter.set_cluster(
                    shared.clone(),
                    "ping",
                    "ping http://127.0.0.1:9/".into(),
                    Duration::from_secs(5),
                );
                Arc::new(limiter)
            })
            .collect()
    }

    /// The most calls in flight at once over all `limiters`, each making
    /// `calls` calls of 5 ms.
    async fn high_water(limiters: &[Arc<Limiter>], calls: usize) -> usize {
        let now = Arc::new(AtomicUsize::new(0));
        let high = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = limiters
            .iter()
            .flat_map(|l| std::iter::repeat_n(l.clone(), calls))
            .map(|limiter| {
                let (now, high) = (now.clone(), high.clone());
                tokio::spawn(async move {
                    let _permit = limiter.acquire().await;
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    high.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        high.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until the released slots' tasks ran.
    async fn until_held(shared: &MemCluster, n: usize) -> usize {
        for _ in 0..200 {
            if shared.held() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shared.held()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_slots_bound_the_calls_of_every_replica_together() {
        let limits = PartnerLimits {
            max_in_flight: 3,
            rate_per_sec: None,
        };
        let shared = Arc::new(MemCluster::default());
        let limiters = replicas(3, limits, &shared);
        assert_eq!(
            limiters[0].cluster_scope(),
            Some("ping http://127.0.0.1:9/")
        );
        let high = high_water(&limiters, 10).await;
        assert!((1..=3).contains(&high), "{high} in flight");
        assert_eq!(until_held(&shared, 0).await, 0, "every slot released");

        // Control: three replicas with local limits only do overlap more.
        let alone: Vec<_> = (0..3).map(|_| Arc::new(Limiter::new(limits))).collect();
        let high = high_water(&alone, 10).await;
        assert!(high > 3, "{high} in flight");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cluster_rate_spaces_the_starts_of_every_replica_together() {
        // 20 per second over three replicas: 30 starts, counted per 1 s window.
        let limits = PartnerLimits {
            max_in_flight: 8,
            rate_per_sec: Some(20.0),
        };
        let shared = Arc::new(MemCluster::default());
        let limiters = replicas(3, limits, &shared);
        let starts = Arc::new(StdMutex::new(Vec::new()));
        let tasks: Vec<_> = limiters
            .iter()
            .flat_map(|l| std::iter::repeat_n(l.clone(), 10))
            .map(|limiter| {
                let starts = starts.clone();
                tokio::spawn(async move {
                    let _permit = limiter.acquire().await;
                    starts.lock().unwrap().push(Instant::now());
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 30);
        let busiest = bridge_sim::arrivals::most_in_one_second(
            starts
                .into_iter()
                .map(tokio::time::Instant::into_std)
                .collect(),
        );
        assert!(busiest <= 21, "{busiest} starts in one second");
        // Local pacing alone lets each replica start 20 per second.
        assert!(busiest >= 10, "{busiest}: the calls did not overlap at all");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_call_gives_its_cluster_slot_back() {
        let limits = PartnerLimits {
            max_in_flight: 1,
            rate_per_sec: None,
        };
        let shared = Arc::new(MemCluster::default());
        let limiters = replicas(2, limits, &shared);

        // Cancelled while holding its permit (in the middle of the exchange).
        let (held_tx, held_rx) = oneshot::channel();
        let a = limiters[0].clone();
        let call = tokio::spawn(async move {
            let _permit = a.acquire().await;
            let _ = held_tx.send(());
            std::future::pending::<()>().await;
        });
        held_rx.await.unwrap();
        assert_eq!(shared.held(), 1);
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(until_held(&shared, 0).await, 0);

        // Cancelled while its slot request was on the way: the slot the
        // store gives after the caller left is released too.
        *shared.take_delay.lock().unwrap() = Duration::from_millis(100);
        let waiting = tokio::time::timeout(Duration::from_millis(10), limiters[1].acquire()).await;
        assert!(waiting.is_err());
        assert_eq!(shared.takes.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(until_held(&shared, 0).await, 0);

        // Both replicas still get their calls through, one at a time.
        *shared.take_delay.lock().unwrap() = Duration::ZERO;
        assert_eq!(high_water(&limiters, 3).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_replicas_slots_come_back_after_their_time_to_live() {
        let limits = PartnerLimits {
            max_in_flight: 2,
            rate_per_sec: None,
        };
        let shared = Arc::new(MemCluster::default());
        let mut dead = Limiter::new(limits);
        dead.set_cluster(
            shared.clone(),
            "ping",
            "ping http://127.0.0.1:9/".into(),
            Duration::from_millis(100),
        );
        // 2 × 100 ms + 1 s.
        assert_eq!(dead.slot_ttl(), Duration::from_millis(1200));
        // The process dies holding both slots: nothing releases them.
        std::mem::forget(dead.acquire().await);
        std::mem::forget(dead.acquire().await);
        assert_eq!(shared.held(), 2);

        let alive = replicas(1, limits, &shared).remove(0);
        let before = Instant::now();
        let takes = shared.takes.load(Ordering::SeqCst);
        let permit = tokio::time::timeout(Duration::from_secs(10), alive.acquire())
            .await
            .expect("the slots came back");
        assert!(before.elapsed() >= Duration::from_millis(1000));
        assert!(
            shared.takes.load(Ordering::SeqCst) - takes > 1,
            "it waited for a slot"
        );
        drop(permit);
        // The other expired slot is free too.
        assert_eq!(high_water(&[alive], 4).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unusable_store_fails_open_to_the_local_limits() {
        let limits = PartnerLimits {
            max_in_flight: 2,
            rate_per_sec: None,
        };
        let shared = Arc::new(MemCluster::default());
        let mut limiter = Limiter::new(limits);
        limiter.set_cluster(
            shared.clone(),
            "ping",
            "ping http://127.0.0.1:9/".into(),
            Duration::from_secs(5),
        );
        if let Some(c) = limiter.cluster.as_mut() {
            c.store_timeout = Duration::from_millis(100);
            c.local_only_for = Duration::from_millis(300);
        }
        let limiter = Arc::new(limiter);

        // Errors: every call goes ahead under the local limit, and the store
        // is not asked again per call in the spell (the local permits'
        // holders may each have asked before the first failure).
        shared.failing.store(true, Ordering::SeqCst);
        let high = high_water(std::slice::from_ref(&limiter), 6).await;
        assert!((1..=2).contains(&high), "{high}");
        let asks = shared.asks.load(Ordering::SeqCst);
        assert!((1..=2).contains(&asks), "{asks} asks for 6 calls");
        assert_eq!(shared.takes.load(Ordering::SeqCst), 0);

        // After the spell the store is asked again and used.
        shared.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(350)).await;
        drop(limiter.acquire().await);
        assert_eq!(shared.takes.load(Ordering::SeqCst), 1);

        // No answer: the call does not hang, it goes ahead after the timeout.
        tokio::time::sleep(Duration::from_millis(50)).await;
        *shared.take_delay.lock().unwrap() = Duration::from_secs(3600);
        let permit = tokio::time::timeout(Duration::from_secs(10), limiter.acquire())
            .await
            .expect("the store's silence does not hold the call");
        assert_eq!(shared.takes.load(Ordering::SeqCst), 2);
        drop(permit);
    }
}

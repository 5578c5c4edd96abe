//! Partner limits held for the whole cluster: when several replicas share
//! one state database (PostgreSQL), each partner's `max_in_flight` and
//! `rate_per_sec` count the calls of every replica together.
//!
//! The clients' limiters ([`bridge_partners::limits`]) take a call slot of
//! the partner's scope (`<partner> <base URL>`) in the state database before
//! each exchange and reserve its start on the scope's shared rate (GCRA);
//! this module is that database side: [`StoreClusterLimits`] over
//! [`Store::slot_acquire`], [`Store::slot_release`] and
//! [`Store::rate_reserve`], the owner of a slot being the replica. Turned on
//! by [`share_partner_limits`] when the state is shared; a single process on
//! SQLite keeps its limits in memory (the same numbers, no round trips).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bridge_flows::app::App;
use bridge_partners::limits::{ClusterLimits, ClusterLimitsError};
use bridge_store::{Store, StoreError};

/// The cluster-wide limits in the state database, for one replica.
pub struct StoreClusterLimits {
    store: Arc<dyn Store>,
    /// The replica id (`host:pid:8-hex`): who holds a slot.
    owner: String,
}

impl StoreClusterLimits {
    pub fn new(store: Arc<dyn Store>, owner: impl Into<String>) -> Self {
        Self {
            store,
            owner: owner.into(),
        }
    }
}

fn unusable(err: StoreError) -> ClusterLimitsError {
    // Store errors name codes and ids only.
    ClusterLimitsError(format!("{}: {err}", err.code()))
}

#[async_trait]
impl ClusterLimits for StoreClusterLimits {
    async fn try_take_slot(
        &self,
        scope: &str,
        slots: u32,
        ttl: Duration,
    ) -> Result<Option<u32>, ClusterLimitsError> {
        self.store
            .slot_acquire(scope, slots, &self.owner, ttl)
            .await
            .map_err(unusable)
    }

    async fn release_slot(&self, scope: &str, slot: u32) -> Result<(), ClusterLimitsError> {
        self.store
            .slot_release(scope, slot, &self.owner)
            .await
            .map_err(unusable)
    }

    async fn reserve_start(
        &self,
        scope: &str,
        interval: Duration,
    ) -> Result<Duration, ClusterLimitsError> {
        self.store
            .rate_reserve(scope, interval)
            .await
            .map_err(unusable)
    }
}

/// Hold the partner limits of `app`'s clients (Primero, PING, DTP) for the
/// whole cluster, in `app.store`, as replica `owner`, when `shared_state`
/// (the state database is shared by replicas: PostgreSQL). Call once the
/// clients are built and before anything clones them. Returns whether the
/// limits are shared.
pub fn share_partner_limits(app: &mut App, shared_state: bool, owner: &str) -> bool {
    if !shared_state {
        return false;
    }
    let shared: Arc<dyn ClusterLimits> =
        Arc::new(StoreClusterLimits::new(app.store.clone(), owner));
    app.primero = app.primero.clone().with_cluster_limits(shared.clone());
    app.ping = app
        .ping
        .take()
        .map(|c| c.with_cluster_limits(shared.clone()));
    app.dtp = app
        .dtp
        .take()
        .map(|c| c.with_cluster_limits(shared.clone()));
    tracing::info!(
        owner,
        "partner limits held for the whole cluster (slots and rate in the state database)"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    use bridge_partners::primero::{PrimeroAuth, PrimeroClient, PrimeroConfig};
    use bridge_partners::{PartnerLimits, RetryPolicy};
    use bridge_sim::people::PeopleGenerator;
    use bridge_sim::primero::{PrimeroSim, PrimeroSimConfig, RunningPrimeroSim};
    use bridge_store::{OpenMode, SqliteStore};

    const GET_CASE: &str = "GET /api/v2/cases/{id}";

    /// Three replicas' views of one state database: each opens it itself.
    struct Cluster {
        _dir: tempfile::TempDir,
        stores: Vec<Arc<dyn Store>>,
    }

    async fn cluster(replicas: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for i in 0..replicas {
            let mode = if i == 0 {
                OpenMode::Init
            } else {
                OpenMode::Existing
            };
            stores.push(Arc::new(SqliteStore::open(&path, mode).await.unwrap()));
        }
        Cluster { _dir: dir, stores }
    }

    async fn primero_sim() -> (RunningPrimeroSim, String) {
        let sim = PrimeroSim::new(PrimeroSimConfig::default())
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts");
        let id = sim.seed_person(&PeopleGenerator::new(18).person(), Vec::new());
        (sim, id)
    }

    fn config(sim: &RunningPrimeroSim, limits: PartnerLimits, timeout: Duration) -> PrimeroConfig {
        let defaults = PrimeroSimConfig::default();
        let mut config = PrimeroConfig::new(
            sim.base_url(),
            PrimeroAuth::Basic {
                user_name: defaults.user_name,
                password: defaults.password,
            },
        );
        config.timeout = timeout;
        config.retry = RetryPolicy::none();
        config.limits = limits;
        config
    }

    /// One Primero client per replica, sharing the limits when `shared`.
    fn clients(
        sim: &RunningPrimeroSim,
        cluster: &Cluster,
        limits: PartnerLimits,
        shared: bool,
    ) -> Vec<PrimeroClient> {
        cluster
            .stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let client =
                    PrimeroClient::new(config(sim, limits, Duration::from_secs(5))).unwrap();
                if shared {
                    client.with_cluster_limits(Arc::new(StoreClusterLimits::new(
                        store.clone(),
                        format!("replica-{i}"),
                    )))
                } else {
                    client
                }
            })
            .collect()
    }

    /// `calls` reads of case `id` by each client at once.
    async fn read_at_once(clients: &[PrimeroClient], id: &str, calls: usize) {
        let reads = clients
            .iter()
            .flat_map(|c| std::iter::repeat_n(c, calls))
            .map(|c| c.get_case(id));
        for r in futures::future::join_all(reads).await {
            r.unwrap();
        }
    }

    /// Slots of `scope` free now: taken (and given back) by a probe owner.
    async fn free_slots(store: &dyn Store, scope: &str, slots: u32) -> u32 {
        let mut taken = Vec::new();
        while let Some(slot) = store
            .slot_acquire(scope, slots, "probe", Duration::from_secs(60))
            .await
            .unwrap()
        {
            taken.push(slot);
        }
        for slot in &taken {
            store.slot_release(scope, *slot, "probe").await.unwrap();
        }
        u32::try_from(taken.len()).unwrap()
    }

    /// Poll (bounded) until `slots` slots of `scope` are free again.
    async fn until_free(store: &dyn Store, scope: &str, slots: u32) -> u32 {
        for _ in 0..100 {
            if free_slots(store, scope, slots).await == slots {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        free_slots(store, scope, slots).await
    }

    #[tokio::test]
    async fn the_switch_shares_each_client_only_when_the_state_is_shared() {
        let (sim, _) = primero_sim().await;
        let tmp = tempfile::tempdir().unwrap();
        let runtime = bridge_runtime::JobRuntime::new(bridge_runtime::RuntimeConfig {
            cache_dir: tmp.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        let limits = PartnerLimits::default();
        let mappings =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings/kenya-dadaab");
        let mut app = App::new(
            Arc::new(SqliteStore::in_memory().await.unwrap()),
            Arc::new(runtime),
            config(&sim, limits, Duration::from_secs(5)),
            None,
            &[],
            &mappings,
        )
        .await
        .unwrap();
        assert!(!share_partner_limits(&mut app, false, "replica-1"));
        assert_eq!(app.primero.limiter().cluster_scope(), None);
        assert!(share_partner_limits(&mut app, true, "replica-1"));
        assert_eq!(
            app.primero.limiter().cluster_scope(),
            Some(format!("primero {}/", sim.base_url()).as_str())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_replicas_keep_to_one_max_in_flight_at_the_partner() {
        let (sim, id) = primero_sim().await;
        sim.set_latency(Duration::from_millis(50));
        let cluster = cluster(3).await;
        let limits = PartnerLimits {
            max_in_flight: 3,
            rate_per_sec: None,
        };
        let replicas = clients(&sim, &cluster, limits, true);
        let scope = replicas[0].limiter().cluster_scope().unwrap().to_string();
        assert_eq!(scope, format!("primero {}/", sim.base_url()));

        read_at_once(&replicas, &id, 10).await;
        let seen = sim.max_in_flight_seen();
        eprintln!("3 replicas × 10 calls, max_in_flight 3 shared: {seen} in flight at Primero");
        assert!((1..=3).contains(&seen), "{seen} in flight");
        assert_eq!(sim.request_count(GET_CASE), 30);
        // Every slot was given back.
        assert_eq!(until_free(&*cluster.stores[0], &scope, 3).await, 3);

        // Control: each replica alone keeps to 3, together they go past it.
        sim.reset_in_flight();
        read_at_once(&clients(&sim, &cluster, limits, false), &id, 10).await;
        let alone = sim.max_in_flight_seen();
        eprintln!("3 replicas × 10 calls, max_in_flight 3 each: {alone} in flight at Primero");
        assert!(alone > 3, "{alone} in flight");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_replicas_keep_to_one_rate_at_the_partner() {
        let (sim, id) = primero_sim().await;
        let cluster = cluster(3).await;
        // 200 ms apart: a start delayed by scheduling or a slow store answer
        // bunches with the next only past that.
        let limits = PartnerLimits {
            max_in_flight: 8,
            rate_per_sec: Some(5.0),
        };
        let replicas = clients(&sim, &cluster, limits, true);
        sim.reset_in_flight();
        read_at_once(&replicas, &id, 5).await;
        let arrivals = sim.arrival_times();
        assert_eq!(arrivals.len(), 15);
        let busiest = bridge_sim::arrivals::most_in_one_second(arrivals);
        eprintln!("3 replicas × 5 calls at 5/s shared: {busiest} in the busiest second");
        // GCRA allows one more at the window's edge (as the bench counts).
        assert!(busiest <= 6, "{busiest} requests in one second");

        // Control: each replica alone keeps to 5/s, together they do not.
        sim.reset_in_flight();
        read_at_once(&clients(&sim, &cluster, limits, false), &id, 5).await;
        let alone = bridge_sim::arrivals::most_in_one_second(sim.arrival_times());
        eprintln!("3 replicas × 5 calls at 5/s each: {alone} in the busiest second");
        assert!(alone > 6, "{alone} requests in one second");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_call_frees_its_slot() {
        let (sim, id) = primero_sim().await;
        let cluster = cluster(2).await;
        let limits = PartnerLimits {
            max_in_flight: 1,
            rate_per_sec: None,
        };
        let replicas = clients(&sim, &cluster, limits, true);
        let scope = replicas[0].limiter().cluster_scope().unwrap().to_string();
        let store = &*cluster.stores[1];

        // A slow answer; the caller gives up while it is in flight.
        sim.set_latency(Duration::from_secs(3));
        let mut entered = false;
        let call = {
            let (client, id) = (replicas[0].clone(), id.clone());
            tokio::spawn(async move { client.get_case(&id).await })
        };
        for _ in 0..100 {
            if free_slots(store, &scope, 1).await == 0 {
                entered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(entered, "the call took the slot");
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        // Given back at once, long before its time to live (2 × 5 s + 1 s).
        assert_eq!(until_free(store, &scope, 1).await, 1);

        // The other replica's call goes through.
        sim.set_latency(Duration::ZERO);
        replicas[1].get_case(&id).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_replicas_slots_come_back_after_their_time_to_live() {
        let (sim, id) = primero_sim().await;
        let cluster = cluster(2).await;
        let limits = PartnerLimits {
            max_in_flight: 2,
            rate_per_sec: None,
        };
        // The replica that dies allows 200 ms per exchange: its slots live
        // 2 × 200 ms + 1 s.
        let dead = PrimeroClient::new(config(&sim, limits, Duration::from_millis(200)))
            .unwrap()
            .with_cluster_limits(Arc::new(StoreClusterLimits::new(
                cluster.stores[0].clone(),
                "replica-dead",
            )));
        assert_eq!(dead.limiter().slot_ttl(), Duration::from_millis(1400));
        let scope = dead.limiter().cluster_scope().unwrap().to_string();
        // It takes both slots and dies: nothing gives them back.
        std::mem::forget(dead.limiter().acquire().await);
        std::mem::forget(dead.limiter().acquire().await);
        let store = &*cluster.stores[1];
        assert_eq!(free_slots(store, &scope, 2).await, 0);

        let alive = PrimeroClient::new(config(&sim, limits, Duration::from_secs(5)))
            .unwrap()
            .with_cluster_limits(Arc::new(StoreClusterLimits::new(
                cluster.stores[1].clone(),
                "replica-alive",
            )));
        let calls = {
            let (alive, id) = (alive.clone(), id.clone());
            tokio::spawn(async move { read_at_once(&[alive], &id, 4).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.request_count(GET_CASE), 0, "still waiting for a slot");
        tokio::time::timeout(Duration::from_secs(20), calls)
            .await
            .expect("the dead replica's slots came back")
            .unwrap();
        assert_eq!(sim.request_count(GET_CASE), 4);
        assert!(sim.max_in_flight_seen() <= 2);
        assert_eq!(until_free(store, &scope, 2).await, 2);
    }
}

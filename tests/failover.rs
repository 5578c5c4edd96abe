//! Failover across replicas (issue 18): three `bridge run` processes share
//! one PostgreSQL database; the one doing the work is killed with SIGKILL
//! in the middle of it, and another finishes it. The simulators then audit
//! that every referral reached Primero exactly once.
//!
//! - `a_killed_lease_holder_s_flow_run_is_taken_over_and_finished`: PING
//!   workflow 1.1 (flow `ping-1.1`), held by the `flow:ping-1.1` lease.
//! - `a_killed_claimant_s_inbox_messages_are_processed_by_another_replica`:
//!   design A's inbox (flow dtp-1.1), messages held by claims.
//!
//! The only timings checked are the bounds the design promises (a lease's
//! ttl plus the schedule's period or the claim sweep), with a wide margin
//! for a loaded machine; the measured figures are printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bridge_demo::dtp_trial::{DtpTrial, INBOX_API_KEY_ENV};
use bridge_demo::scenario::Simulators;
use bridge_sim::dtp::{push_to_inbox, referral_message};
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::ping::SimIntervention;
use bridge_testkit::postgres::TestDatabase;
use bridge_testkit::replicas::Replicas;
use sqlx::PgPool;

use crate::durable::{audit, primero_audit, project, seed};

const FLOW: &str = "ping-1.1";
/// `[cluster] lease_ttl_secs` of every replica: the shortest allowed.
const TTL_SECS: u64 = 3;
/// Slack over the promised bounds, for a machine busy with other work.
const MARGIN: Duration = Duration::from_secs(15);

/// The replicas of one test: started in order, killed when dropped (a
/// failed assertion included).
struct Cluster {
    replicas: Replicas,
}

impl Cluster {
    /// Start `names.len()` replicas, each with the config `config(name)`
    /// writes: the first with `--init` (it creates the schema), then the
    /// others together. Returns once every one said `bridge running`.
    async fn start(
        names: &[&str],
        config: impl Fn(&str) -> PathBuf,
        env: &[(&'static str, String)],
    ) -> Self {
        let mut cluster = Cluster {
            replicas: Replicas::new(),
        };
        let command = |name: &str, init: bool| {
            let path = config(name);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge"));
            cmd.arg("run");
            if init {
                cmd.arg("--init");
            }
            cmd.arg("--config")
                .arg(&path)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("BRIDGE_LOG", "info")
                .current_dir(path.parent().expect("config folder"));
            cmd
        };
        // The first creates the schema, then the others start together.
        for group in [&names[..1], &names[1..]] {
            for name in group {
                if let Err(e) = cluster
                    .replicas
                    .spawn(name, command(name, *name == names[0]))
                {
                    cluster.fail(&e);
                }
            }
            for name in group {
                let started = tokio::task::block_in_place(|| {
                    cluster
                        .replicas
                        .wait_started(name, Duration::from_secs(180))
                });
                if let Err(e) = started {
                    cluster.fail(&e);
                }
            }
        }
        cluster
    }

    fn names(&self) -> Vec<String> {
        self.replicas.running()
    }

    /// SIGKILL replica `name`.
    fn kill(&mut self, name: &str) {
        if !self.replicas.kill(name) {
            self.fail(&format!("replica {name} was not running"));
        }
    }

    /// Wait until every referral of `people` is in Primero once and
    /// acknowledged, failing on a duplicate or after `limit` (`after` says
    /// what happened before, for the message).
    async fn await_all_delivered(
        &mut self,
        (sims, people, interventions): (&Simulators, &[Person], &[SimIntervention]),
        limit: Duration,
        after: &str,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let (duplicates, lost) = audit(sims, people, interventions);
            if duplicates > 0 {
                self.fail(&format!(
                    "{duplicates} duplicates in Primero after {after} ({lost} not yet delivered)"
                ));
            }
            if lost == 0 {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{lost} referrals still undelivered or unacknowledged {limit:?} after {after}; pending in PING: {:?}",
                    sims.ping_sim().pending_intervention_ids()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kill every replica, then panic with `why` and the end of each one's
    /// log: what a failure saw.
    fn fail(&mut self, why: &str) -> ! {
        let logs = self.replicas.stop_and_logs(40);
        panic!("{why}\n{logs}");
    }
}

/// A replica's `[metrics]` (a port of its own) and `[cluster]` sections.
fn replica_toml(name: &str) -> String {
    format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nreplica = \"{name}\"\nlease_ttl_secs = {TTL_SECS}\n"
    )
}

fn state_toml(db: &TestDatabase) -> String {
    format!("[state]\nurl = \"{}\"", db.url())
}

/// A lease as the database has it: owner, token, and whether it is live on
/// the database's clock.
async fn lease(pool: &PgPool, name: &str) -> Option<(String, i64, bool)> {
    sqlx::query_as(
        "SELECT owner, token, expires_at > bridge_stamp(now()) FROM leases WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .expect("read leases")
}

/// Inbox messages with a claimant: (id, claimed_by, live).
async fn claims(pool: &PgPool) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT id, claimed_by, claim_expires_at > bridge_stamp(now()) FROM inbox
         WHERE claimed_by IS NOT NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("read inbox claims")
}

async fn inbox_states(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT id, state, attempts FROM inbox ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("read inbox")
}

async fn running_runs(pool: &PgPool, flow: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM runs WHERE flow = $1 AND outcome = 'running'")
        .bind(flow)
        .fetch_all(pool)
        .await
        .expect("read runs")
}

fn people(seed: u64, n: usize) -> Vec<Person> {
    let mut g = PeopleGenerator::new(seed);
    (0..n).map(|_| g.person()).collect()
}

/// How many times each intervention's transfer status was written in proGres.
fn status_writes(sims: &Simulators, interventions: &[SimIntervention]) -> Vec<usize> {
    interventions
        .iter()
        .map(|iv| {
            sims.ping_sim()
                .intervention_state(&iv.lpinterventionid)
                .expect("intervention")
                .status_writes
        })
        .collect()
}

/// How many of `people` have a case in Primero.
fn with_a_case(sims: &Simulators, people: &[Person]) -> usize {
    people
        .iter()
        .filter(|p| {
            !sims
                .primero_sim()
                .find_by_individual_no(&p.progres_id)
                .is_empty()
        })
        .count()
}

/// Replicas `names` running WF 1.1 every second against fresh simulators,
/// `record_concurrency` records at a time, sharing database `db`.
struct Wf11Cluster {
    sims: Simulators,
    cluster: Cluster,
    pool: PgPool,
    _tmp: tempfile::TempDir,
}

async fn wf11_cluster(db: &TestDatabase, names: &[&str], record_concurrency: usize) -> Wf11Cluster {
    let project = project();
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = sims
        .config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab"))
        .replace("[state]\npath = \"state.db\"", &state_toml(db));
    assert!(base.contains(&state_toml(db)), "[state] not found");
    let config = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bridge.toml");
        std::fs::write(
            &file,
            format!(
                "{base}\n[schedule]\n\"{FLOW}\" = \"* * * * * *\"\n\n[delivery]\nrecord_concurrency = {record_concurrency}\n\n{}",
                replica_toml(name)
            ),
        )
        .unwrap();
        file
    };
    let cluster = Cluster::start(names, config, &sims.secret_env()).await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    Wf11Cluster {
        sims,
        cluster,
        pool,
        _tmp: tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_lease_holder_s_flow_run_is_taken_over_and_finished() {
    let Some(db) = bridge_testkit::postgres::database().await else {
        return;
    };
    // Every replica keeps the whole schedule: every second. Two records at
    // a time, so that a run over the seed lasts several seconds.
    let Wf11Cluster {
        sims,
        mut cluster,
        pool,
        _tmp,
    } = wf11_cluster(&db, &["a", "b", "c"], 2).await;

    // Slow partners: each record takes a few hundred milliseconds.
    sims.primero_sim().set_latency(Duration::from_millis(200));
    sims.ping_sim().set_latency(Duration::from_millis(50));
    let people = people(181, 24);
    let interventions = seed(&sims, &people, 0, 18100);
    let n = people.len();

    // Mid-run: some referrals delivered, not all.
    let deadline = Instant::now() + Duration::from_secs(120);
    while with_a_case(&sims, &people) < 4 {
        if Instant::now() > deadline {
            let seen = with_a_case(&sims, &people);
            cluster.fail(&format!(
                "no run delivered 4 of {n} referrals in 120 s ({seen} delivered)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let name = bridge_store::Lease::flow_name(FLOW);
    let holder = lease(&pool, &name).await;
    let Some((killed, token, true)) = holder.clone() else {
        cluster.fail(&format!("no live lease {name} mid-run: {holder:?}"));
    };
    if !cluster.names().contains(&killed) {
        cluster.fail(&format!(
            "lease {name} held by {killed}, not a replica of this test"
        ));
    }
    cluster.kill(&killed);
    let killed_at = Instant::now();
    let delivered_at_kill = with_a_case(&sims, &people);
    let left_running = running_runs(&pool, FLOW).await;
    if delivered_at_kill >= n {
        cluster.fail(&format!(
            "the run finished before replica {killed} was killed ({delivered_at_kill} of {n}): nothing to take over"
        ));
    }

    // Another replica takes the lease over once it expires, at the next
    // scheduled slot: within the ttl plus the schedule's second.
    let promised = Duration::from_secs(TTL_SECS) + Duration::from_secs(1);
    let (new_owner, new_token, took_over) = loop {
        let seen = lease(&pool, &name).await;
        if let Some((owner, t, true)) = &seen {
            if *owner != killed {
                break (owner.clone(), *t, killed_at.elapsed());
            }
        }
        if killed_at.elapsed() > promised + MARGIN {
            cluster.fail(&format!(
                "lease {name} of killed replica {killed} (token {token}) not taken over {:?} after the kill (promised {promised:?} + margin {MARGIN:?}); now {seen:?}",
                killed_at.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        new_token > token,
        "the fencing token grows when the lease changes owner: {token} then {new_token}"
    );

    // The new holder finishes: every referral in Primero and acknowledged.
    cluster
        .await_all_delivered(
            (&sims, &people, &interventions),
            Duration::from_secs(90),
            &format!("replica {killed} was killed and {new_owner} took lease {name} over"),
        )
        .await;
    let finished = killed_at.elapsed();
    // Each referral's transfer status was written in proGres once.
    let acks = status_writes(&sims, &interventions);
    if acks.iter().any(|&w| w != 1) {
        cluster.fail(&format!(
            "each referral acknowledged once in proGres, seen status writes {acks:?}"
        ));
    }
    assert!(sims.ping_sim().pending_intervention_ids().is_empty());

    // The run the killed replica left `running` is marked interrupted by a
    // later run on another replica.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let still = running_runs(&pool, FLOW).await;
        let stuck: Vec<&String> = left_running.iter().filter(|r| still.contains(r)).collect();
        if stuck.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "runs of killed replica {killed} still marked running: {stuck:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !left_running.is_empty(),
        "the killed replica had a run in progress"
    );

    eprintln!(
        "failover (lease): replica {killed} killed with {delivered_at_kill} of {n} referrals delivered; \
         {new_owner} held {name} (token {token} -> {new_token}) {:.1} s after the kill (ttl {TTL_SECS} s), \
         all {n} delivered {:.1} s after the kill; 0 duplicates, 0 lost, each acknowledged once",
        took_over.as_secs_f64(),
        finished.as_secs_f64()
    );
}

/// The lease holder is suspended (SIGSTOP: a VM paused, a process stalled)
/// in the middle of a run, with records between their Primero search and
/// their write. Another replica takes the flow over and delivers every
/// referral; then the suspended one resumes, its searches answered before
/// the pause ("no case yet"). It must write nothing on them: its lease ran
/// out on its own clock, so not one child gets a second case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspended_lease_holder_writes_nothing_when_it_resumes() {
    let Some(db) = bridge_testkit::postgres::database().await else {
        return;
    };
    // Four records at a time: several are waiting for a Primero answer
    // whenever the holder is suspended, and they hold at most four of
    // Primero's eight cluster call slots (a suspended replica's slots are
    // free again only after twice the longest exchange), so the other
    // replica can go on meanwhile.
    let Wf11Cluster {
        sims,
        mut cluster,
        pool,
        _tmp,
    } = wf11_cluster(&db, &["a", "b"], 4).await;
    sims.primero_sim().set_latency(Duration::from_millis(300));
    sims.ping_sim().set_latency(Duration::from_millis(20));
    let people = people(191, 64);
    let interventions = seed(&sims, &people, 0, 19100);
    let n = people.len();

    // Mid-run, at a moment Primero is answering searches of the holder's:
    // their answers reach it only once it resumes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while with_a_case(&sims, &people) < 8
        || sims.primero_sim().in_flight_for("GET /api/v2/cases") == 0
    {
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "no run delivered 8 of {n} referrals with searches in flight in 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let name = bridge_store::Lease::flow_name(FLOW);
    let holder = lease(&pool, &name).await;
    let Some((suspended, token, true)) = holder.clone() else {
        cluster.fail(&format!("no live lease {name} mid-run: {holder:?}"));
    };
    if !cluster.replicas.suspend(&suspended, true) {
        cluster.fail(&format!("replica {suspended} could not be suspended"));
    }
    let delivered_at_pause = with_a_case(&sims, &people);
    if delivered_at_pause >= n {
        cluster.fail(&format!(
            "the run finished before replica {suspended} was suspended: nothing in flight"
        ));
    }

    // The other replica takes over and delivers everything.
    cluster
        .await_all_delivered(
            (&sims, &people, &interventions),
            Duration::from_secs(120),
            &format!("replica {suspended} was suspended"),
        )
        .await;
    let taken = lease(&pool, &name).await;
    assert!(
        taken
            .as_ref()
            .is_some_and(|(owner, t, _)| *owner != suspended && *t > token),
        "the lease moved on: {taken:?}"
    );

    // Resumed, the old holder finds its lease gone on its own clock.
    let creates_before = sims.primero_sim().request_count("POST /api/v2/cases");
    if !cluster.replicas.suspend(&suspended, false) {
        cluster.fail(&format!("replica {suspended} could not be resumed"));
    }
    tokio::time::sleep(Duration::from_secs(2 * TTL_SECS)).await;
    let (duplicates, lost) = audit(&sims, &people, &interventions);
    let creates_after = sims.primero_sim().request_count("POST /api/v2/cases");
    if duplicates > 0 || lost > 0 {
        cluster.fail(&format!(
            "after {suspended} resumed: {duplicates} duplicates, {lost} lost; \
             {} case creates sent after the resume",
            creates_after - creates_before
        ));
    }
    assert_eq!(
        creates_after, creates_before,
        "no case created by the resumed replica (or anyone) after all were delivered"
    );
    // Nor did it write transfer statuses for the cases it had created
    // before the pause: the other replica acknowledged them, once.
    let acks = status_writes(&sims, &interventions);
    if acks.iter().any(|&w| w != 1) {
        cluster.fail(&format!(
            "each referral acknowledged once in proGres, seen status writes {acks:?}"
        ));
    }
    eprintln!(
        "failover (suspended holder): {suspended} suspended with {delivered_at_pause} of {n} delivered; \
         the other replica delivered the rest; after resuming, {suspended} wrote nothing: 0 duplicates, 0 lost"
    );
}

/// The design A jobs the inbox runs.
const DTP_JOBS: [&str; 2] = ["dtp-1.1", "dtp-2.3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_claimant_s_inbox_messages_are_processed_by_another_replica() {
    let Some(db) = bridge_testkit::postgres::database().await else {
        return;
    };
    let project = bridge_runtime::toolchain::ProjectDirs::locate().expect("project folder");
    project
        .build_jobs(&DTP_JOBS.map(String::from))
        .expect("jobs build");
    let tmp = tempfile::tempdir().unwrap();
    // The inbox's jobs only (other jobs may need another deployment's tables).
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    for job in DTP_JOBS {
        std::fs::copy(project.job_wasm(job), jobs.join(format!("{job}.wasm"))).unwrap();
    }
    let sims = Simulators::start_loopback().await.unwrap();
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let trial = DtpTrial::start(any, any).await.unwrap();
    let pki = trial.pki.write_files(tmp.path()).unwrap();
    let base = trial.replica_config_toml(
        &sims,
        &pki,
        &jobs,
        &project.mappings("ethiopia-gambella"),
        &state_toml(&db),
    );
    let config = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bridge.toml");
        std::fs::write(&file, format!("{base}\n{}", replica_toml(name))).unwrap();
        file
    };
    let env = trial.secret_env(&sims);
    let mut cluster = Cluster::start(&["a", "b", "c"], config, &env).await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    let api_key = env
        .iter()
        .find(|(k, _)| *k == INBOX_API_KEY_ENV)
        .map(|(_, v)| v.clone())
        .expect("the inbox API key");
    let inboxes: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| {
            r.inbox
                .clone()
                .expect("each replica prints its inbox address")
        })
        .collect();

    // Slow Primero: each message takes about a second.
    sims.primero_sim().set_latency(Duration::from_millis(700));
    let people = people(182, 18);
    let interventions: Vec<SimIntervention> = people
        .iter()
        .enumerate()
        .map(|(i, p)| SimIntervention::for_person(p.clone(), 18200 + i as u64))
        .collect();
    let n = interventions.len();
    // DTP's load balancer spreads the pushes over the three inboxes.
    for (i, iv) in interventions.iter().enumerate() {
        let message = referral_message(std::slice::from_ref(iv));
        let answer = push_to_inbox(&inboxes[i % inboxes.len()], &api_key, &message)
            .await
            .unwrap();
        if answer.status != 202 {
            cluster.fail(&format!(
                "push {i} to {} answered {} {}",
                inboxes[i % inboxes.len()],
                answer.status,
                answer.body
            ));
        }
    }

    // Mid-way: some messages processed, and a replica holding live claims.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (killed, held) = loop {
        let done = n - inbox_states(&pool).await.len();
        let live: Vec<(String, String, bool)> =
            claims(&pool).await.into_iter().filter(|c| c.2).collect();
        if done >= 2 {
            // The replica with the most live claims.
            let mut best: Option<(String, Vec<String>)> = None;
            for name in cluster.names() {
                let ids: Vec<String> = live
                    .iter()
                    .filter(|c| c.1 == name)
                    .map(|c| c.0.clone())
                    .collect();
                if ids.len() > best.as_ref().map_or(0, |b| b.1.len()) {
                    best = Some((name, ids));
                }
            }
            if let Some(best) = best {
                break best;
            }
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "no replica held claims mid-way in 120 s: {done} of {n} processed, claims {live:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.kill(&killed);
    let killed_at = Instant::now();
    let pending_at_kill = inbox_states(&pool).await.len();

    // Its messages are claimed again by the others once its claims expire
    // (the sweep runs every quarter ttl), and processed.
    let promised = Duration::from_secs(TTL_SECS) + Duration::from_secs(TTL_SECS) / 4;
    let left: Vec<String> = {
        let states = inbox_states(&pool).await;
        held.iter()
            .filter(|id| states.iter().any(|s| s.0 == **id))
            .cloned()
            .collect()
    };
    if left.is_empty() {
        cluster.fail(&format!(
            "replica {killed} had processed all of {held:?} before it was killed: nothing to take over"
        ));
    }
    let mut taken_over = None;
    let mut takers = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let states = inbox_states(&pool).await;
        let claims = claims(&pool).await;
        for (id, by, _) in &claims {
            if left.contains(id) && *by != killed {
                takers.insert(by.clone());
                taken_over.get_or_insert(killed_at.elapsed());
            }
        }
        let remaining: Vec<&String> = left
            .iter()
            .filter(|id| states.iter().any(|s| s.0 == **id))
            .collect();
        if remaining.is_empty() {
            // Claimed and processed between two looks.
            taken_over.get_or_insert(killed_at.elapsed());
        }
        if taken_over.is_none() && killed_at.elapsed() > promised + MARGIN {
            cluster.fail(&format!(
                "messages {left:?} of killed replica {killed} not claimed by another replica {:?} after the kill (promised {promised:?} + margin {MARGIN:?}); claims now {claims:?}",
                killed_at.elapsed()
            ));
        }
        if states.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "inbox not empty 90 s after replica {killed} was killed: {states:?} (id, state, attempts); claims {claims:?}; its messages were {left:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = killed_at.elapsed();
    let took_over = taken_over.expect("taken over before the inbox emptied");

    // Exactly once in Primero: one case per child, one service per referral.
    let (duplicates, lost) = primero_audit(sims.primero_sim(), &people, &interventions);
    if (duplicates, lost) != (0, 0) {
        cluster.fail(&format!(
            "after replica {killed} was killed holding {held:?}: {duplicates} duplicates and {lost} lost in Primero"
        ));
    }
    // DTP was told about every referral (a notification may be sent again
    // when its replica died between sending it and recording it).
    let notified = trial.notified();
    let unnotified: Vec<&str> = interventions
        .iter()
        .map(|iv| iv.intervention_number.as_str())
        .filter(|number| !notified.iter().any(|n| n == number))
        .collect();
    if !unnotified.is_empty() {
        cluster.fail(&format!("DTP never told of {unnotified:?}"));
    }
    eprintln!(
        "failover (inbox): replica {killed} killed holding claims on {} messages ({} not yet processed), {pending_at_kill} of {n} left; \
         its messages claimed by {takers:?} {:.1} s after the kill (ttl {TTL_SECS} s), inbox empty {:.1} s after; \
         0 duplicates, 0 lost in Primero, {} notifications for {n} referrals",
        held.len(),
        left.len(),
        took_over.as_secs_f64(),
        finished.as_secs_f64(),
        notified.len()
    );
}

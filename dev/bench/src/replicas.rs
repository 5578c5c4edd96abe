//! Part 6: replicas (issue 18). One workload, end to end against the
//! simulators with partner latency, run by one and then by three
//! `bridge run` replicas per deployment sharing a PostgreSQL, side by side
//! in one bench run: PING workflow 1.1 (a design B deployment, flow
//! `ping-1.1` every second) and design A's inbox (DTP pushes proGres
//! referrals, flow dtp-1.1), at the same time. Then the cost of failover:
//! the holder of `flow:ping-1.1` is killed with SIGKILL in the middle of a
//! run, and the seconds without progress are measured. PostgreSQL is the
//! cluster `BRIDGE_TEST_POSTGRES_URL` names or a throwaway one
//! (bridge_testkit); without it the part says why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bridge_demo::dtp_trial::{DtpTrial, INBOX_API_KEY_ENV};
use bridge_demo::scenario::Simulators;
use bridge_sim::dtp::{push_to_inbox, referral_message};
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_testkit::postgres::TestDatabase;
use bridge_testkit::replicas::Replicas;

use super::report::{num, Report, Section, Table};
use super::Bench;

const FLOW: &str = "ping-1.1";
/// The design A jobs the inbox runs.
const DTP_JOBS: [&str; 2] = ["dtp-1.1", "dtp-2.3"];
/// `[cluster] lease_ttl_secs` of every replica: the shortest allowed.
const TTL_SECS: u64 = 3;
/// Records a run works on at once in the failover run: few, so that the
/// run lasts long enough to be killed in its middle.
const FAILOVER_CONCURRENCY: usize = 4;
/// The target's allowance over the ttl: one scheduled slot (the flow runs
/// every second) and the first record's partner calls.
const FAILOVER_SLACK: Duration = Duration::from_secs(2);

struct Sizes {
    /// WF 1.1 referrals seeded in PING.
    referrals: usize,
    /// Messages DTP pushes to the inboxes (one referral each).
    messages: usize,
    /// WF 1.1 referrals of the failover run.
    failover: usize,
    /// Longest a measured run may take.
    budget: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                referrals: 30,
                messages: 12,
                failover: 150,
                budget: Duration::from_secs(120),
            }
        } else {
            Self {
                referrals: 600,
                messages: 300,
                failover: 1_200,
                budget: Duration::from_secs(600),
            }
        }
    }
}

/// One measured workload.
struct Load {
    replicas: usize,
    referrals: usize,
    messages: usize,
    /// From the load's start until the last WF 1.1 referral was
    /// acknowledged, the last inbox message answered, and both.
    ping: Duration,
    inbox: Duration,
    total: Duration,
}

impl Load {
    fn rate(n: usize, d: Duration) -> f64 {
        n as f64 / d.as_secs_f64().max(1e-9)
    }
    fn total_rate(&self) -> f64 {
        Self::rate(self.referrals + self.messages, self.total)
    }
    fn ping_rate(&self) -> f64 {
        Self::rate(self.referrals, self.ping)
    }
    fn inbox_rate(&self) -> f64 {
        Self::rate(self.messages, self.inbox)
    }
}

/// What killing the lease holder cost.
struct Failover {
    referrals: usize,
    /// Case writes Primero had applied when the holder was killed.
    written_at_kill: usize,
    /// From the kill until another replica held the lease.
    taken_over: Duration,
    /// From the kill until the new holder's first partner call.
    resumed: Duration,
    /// From the kill until the next referral was written to Primero.
    without_progress: Duration,
    /// From the kill until every referral was acknowledged.
    all_done: Duration,
}

pub(crate) async fn section(b: &Bench, report: &mut Report) -> anyhow::Result<Section> {
    const TARGET: &str = "failover: another replica resumes the flow of a lease holder killed with SIGKILL within the lease ttl + 2 s (a schedule slot, slack)";
    let db = match bridge_testkit::postgres::try_database().await {
        Ok(db) => db,
        Err(why) => {
            b.say(format!("PostgreSQL not measured: {why}"));
            report.target(TARGET, format!("PostgreSQL not measured: {why}"), None);
            return Ok(Section {
                intro: vec![format!(
                    "Replicas share a PostgreSQL database; PostgreSQL not measured: {why}."
                )],
                ..Section::default()
            });
        }
    };
    let sizes = Sizes::new(b.opts.quick);
    let latency = b.opts.latency;
    let mut loads = Vec::new();
    for replicas in [1, 3] {
        let load = workload(b, &db, replicas, &sizes).await?;
        b.say(format!(
            "{replicas} replica(s) per deployment: {} referrals/s ({} WF 1.1 in {:.1} s, {} inbox messages in {:.1} s)",
            num(load.total_rate(), 1),
            load.referrals,
            load.ping.as_secs_f64(),
            load.messages,
            load.inbox.as_secs_f64()
        ));
        loads.push(load);
    }
    let fo = failover(b, &db, &sizes).await?;
    b.say(format!(
        "failover: lease taken over {:.1} s after the kill, work resumed after {:.1} s, next referral delivered after {:.1} s (ttl {TTL_SECS} s)",
        fo.taken_over.as_secs_f64(),
        fo.resumed.as_secs_f64(),
        fo.without_progress.as_secs_f64()
    ));

    let mut table = Table::new(&[
        "replicas per deployment",
        "WF 1.1 referrals",
        "inbox messages",
        "WF 1.1 done s",
        "inbox done s",
        "all done s",
        "WF 1.1 referrals/s",
        "inbox messages/s",
        "referrals/s (both)",
    ]);
    for l in &loads {
        table.row(vec![
            l.replicas.to_string(),
            l.referrals.to_string(),
            l.messages.to_string(),
            num(l.ping.as_secs_f64(), 1),
            num(l.inbox.as_secs_f64(), 1),
            num(l.total.as_secs_f64(), 1),
            num(l.ping_rate(), 1),
            num(l.inbox_rate(), 1),
            num(l.total_rate(), 1),
        ]);
    }
    let ratio = |f: fn(&Load) -> f64| f(&loads[1]) / f(&loads[0]);
    let mut failover = Table::new(&[
        "WF 1.1 referrals",
        "Primero case writes at the kill",
        "lease ttl s",
        "lease taken over after s",
        "resumed after s (new holder's first partner call)",
        "without progress s (kill → next referral delivered)",
        "all delivered after s",
    ])
    .caption(format!(
        "Failover: three replicas of the design B deployment, {FAILOVER_CONCURRENCY} records at once; the replica \
         holding `flow:{FLOW}` is killed with SIGKILL once Primero has applied case writes for a fifth of the referrals. Seconds from the \
         kill (read from the lease in PostgreSQL and the Primero simulator's writes)."
    ));
    failover.row(vec![
        fo.referrals.to_string(),
        fo.written_at_kill.to_string(),
        TTL_SECS.to_string(),
        num(fo.taken_over.as_secs_f64(), 1),
        num(fo.resumed.as_secs_f64(), 1),
        num(fo.without_progress.as_secs_f64(), 1),
        num(fo.all_done.as_secs_f64(), 1),
    ]);
    let bound = Duration::from_secs(TTL_SECS) + FAILOVER_SLACK;
    report.target(
        TARGET,
        format!(
            "resumed after {:.1} s, lease ttl {TTL_SECS} s ({:.1} s to the next referral delivered)",
            fo.resumed.as_secs_f64(),
            fo.without_progress.as_secs_f64()
        ),
        Some(fo.resumed <= bound),
    );
    Ok(Section {
        intro: vec![format!(
            "One workload run end to end by 1 and then by 3 `bridge run` replicas per deployment, side by side in one \
             run: a design B deployment (PING workflow 1.1 every second, {} records at once) and a design A deployment \
             (DTP pushing proGres referrals to the inboxes, spread over the replicas) at the same time, each with its \
             own database on one PostgreSQL, against the simulators with {} ms latency on every partner call, the \
             partner limits the defaults (held for the whole cluster), `lease_ttl_secs = {TTL_SECS}`. The clock starts \
             when the referrals are seeded and the pushes begin, and stops when the last referral is acknowledged in \
             PING and the last message answered to DTP.",
            b.opts.concurrency,
            latency.as_millis()
        )],
        tables: vec![table, failover],
        notes: vec![
            format!(
                "3 replicas ÷ 1: **{:.2}×** the referrals a second of the whole workload; WF 1.1 {:.2}×, the inbox {:.2}×.",
                ratio(Load::total_rate),
                ratio(Load::ping_rate),
                ratio(Load::inbox_rate)
            ),
            "A flow's run is held by one replica at a time (its lease): more replicas make WF 1.1 survive a machine, \
             not run faster. Inbox messages are claimed a few at a time by every replica, so the inbox shares out; \
             the partners' call limits hold for all replicas together."
                .into(),
            format!(
                "Failover: with a {TTL_SECS} s lease, another replica held it {:.1} s after the kill and called the \
                 partners {:.1} s after it (the lease expires, the next scheduled slot on another replica takes it). \
                 The next referral was delivered {:.1} s after the kill: the new run first checks, record by record, \
                 what the dead one had written in Primero but not yet acknowledged in proGres ({} case writes here), \
                 which it acknowledges without writing again (docs/operator/replicas.md).",
                fo.taken_over.as_secs_f64(),
                fo.resumed.as_secs_f64(),
                fo.without_progress.as_secs_f64(),
                fo.written_at_kill
            ),
        ],
        ..Section::default()
    })
}

/// A folder of its own for one measured run.
fn run_dir(b: &Bench, tag: &str) -> anyhow::Result<PathBuf> {
    let dir = b.tmp.join(format!("replicas-{tag}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A replica's `[metrics]` (a port of its own) and `[cluster]` sections.
fn replica_toml(name: &str) -> String {
    format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nreplica = \"{name}\"\nlease_ttl_secs = {TTL_SECS}\n"
    )
}

/// The design B deployment's config on `url`: WF 1.1 every second.
fn ping_config(
    b: &Bench,
    sims: &Simulators,
    url: &str,
    concurrency: usize,
) -> anyhow::Result<String> {
    let state = format!("[state]\nurl = \"{url}\"");
    let text = sims
        .config_toml(&b.project.jobs_dist(), &b.mappings_dir)
        .replacen("[state]\npath = \"state.db\"", &state, 1);
    anyhow::ensure!(
        text.contains(&state),
        "no [state] in the simulators' config"
    );
    Ok(format!(
        "{text}\n[schedule]\n\"{FLOW}\" = \"* * * * * *\"\n\n[delivery]\nrecord_concurrency = {concurrency}\n"
    ))
}

/// Start `count` replicas `<prefix>-1…` of the config `base`, the first
/// with `--init`, then the others together.
fn start(
    b: &Bench,
    replicas: &mut Replicas,
    dir: &Path,
    prefix: &str,
    count: usize,
    base: &str,
    env: &[(&'static str, String)],
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (1..=count).map(|i| format!("{prefix}-{i}")).collect();
    for group in [&names[..1], &names[1..]] {
        for name in group {
            let folder = dir.join(name);
            std::fs::create_dir_all(&folder)?;
            let config = folder.join("bridge.toml");
            std::fs::write(&config, format!("{base}\n{}", replica_toml(name)))?;
            let mut cmd = std::process::Command::new(&b.opts.exe);
            cmd.args(b.cache_args()).arg("run");
            if *name == names[0] {
                cmd.arg("--init");
            }
            cmd.arg("--config")
                .arg(&config)
                .envs(env.iter().cloned())
                .env("BRIDGE_LOG", "warn")
                .current_dir(&folder)
                .stdin(std::process::Stdio::null());
            replicas.spawn(name, cmd).map_err(anyhow::Error::msg)?;
        }
        for name in group {
            tokio::task::block_in_place(|| replicas.wait_started(name, Duration::from_secs(180)))
                .map_err(|e| anyhow::anyhow!("{e}{}", replicas.stop_and_logs(30)))?;
        }
    }
    Ok(names)
}

/// WF 1.1 and the inbox at once, run by `count` replicas per deployment.
async fn workload(
    b: &Bench,
    db: &TestDatabase,
    count: usize,
    sizes: &Sizes,
) -> anyhow::Result<Load> {
    let dir = run_dir(b, &format!("load-{count}"))?;
    let sims = Simulators::start_loopback().await?;
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let trial = DtpTrial::start(any, any).await?;
    let pki = trial.pki.write_files(&dir)?;
    // The inbox's jobs only (other jobs may need another deployment's tables).
    let jobs = dir.join("dtp-jobs");
    std::fs::create_dir_all(&jobs)?;
    for job in DTP_JOBS {
        std::fs::copy(b.project.job_wasm(job), jobs.join(format!("{job}.wasm")))?;
    }
    let ping_url = db.sibling(&format!("r{count}_ping")).await;
    let dtp_url = db.sibling(&format!("r{count}_dtp")).await;
    let ping_base = ping_config(b, &sims, &ping_url, b.opts.concurrency)?;
    let dtp_base = trial.replica_config_toml(
        &sims,
        &pki,
        &jobs,
        &b.project.mappings("ethiopia-gambella"),
        &format!("[state]\nurl = \"{dtp_url}\""),
    );
    let mut replicas = Replicas::new();
    start(
        b,
        &mut replicas,
        &dir,
        "ping",
        count,
        &ping_base,
        &sims.secret_env(),
    )?;
    let env = trial.secret_env(&sims);
    let dtp_names = start(b, &mut replicas, &dir, "dtp", count, &dtp_base, &env)?;
    let inboxes: Vec<String> = replicas
        .iter()
        .filter(|r| dtp_names.contains(&r.name))
        .filter_map(|r| r.inbox.clone())
        .collect();
    anyhow::ensure!(
        inboxes.len() == count,
        "a design A replica printed no inbox address"
    );
    let api_key = env
        .iter()
        .find(|(k, _)| *k == INBOX_API_KEY_ENV)
        .map(|(_, v)| v.clone())
        .context("the inbox API key")?;
    let latency = b.opts.latency;
    sims.primero_sim().set_latency(latency);
    sims.ping_sim().set_latency(latency);
    trial.dtp.sim().set_latency(latency);

    // The load: WF 1.1's referrals all at once, DTP's pushes spread over
    // the inboxes as they are made.
    let started = Instant::now();
    super::sections::seed(
        &sims,
        FLOW,
        sizes.referrals,
        super::sections::Stamps::Spread,
    )?;
    let mut people = PeopleGenerator::new(6_006);
    let messages: Vec<(String, serde_json::Value)> = (0..sizes.messages)
        .map(|i| {
            let iv = SimIntervention::for_person(people.person(), 600_000 + i as u64);
            (iv.intervention_number.clone(), referral_message(&[iv]))
        })
        .collect();
    let numbers: Vec<String> = messages.iter().map(|(n, _)| n.clone()).collect();
    tokio::spawn(push_all(messages, inboxes, api_key));
    let (mut ping_done, mut inbox_done) = (None, None);
    loop {
        let now = started.elapsed();
        if ping_done.is_none() && sims.ping_sim().pending_intervention_ids().is_empty() {
            ping_done = Some(now);
        }
        if inbox_done.is_none() {
            let told = notified(&trial);
            if numbers.iter().all(|n| told.contains(n)) {
                inbox_done = Some(now);
            }
        }
        if let (Some(ping), Some(inbox)) = (ping_done, inbox_done) {
            return Ok(Load {
                replicas: count,
                referrals: sizes.referrals,
                messages: sizes.messages,
                ping,
                inbox,
                total: ping.max(inbox),
            });
        }
        if now > sizes.budget {
            let pending = sims.ping_sim().pending_intervention_ids().len();
            let told = notified(&trial);
            let logs = replicas.stop_and_logs(20);
            anyhow::bail!(
                "{count} replica(s): not done in {:?}: {pending} WF 1.1 referrals pending, {} of {} inbox referrals answered{logs}",
                sizes.budget,
                numbers.iter().filter(|n| told.contains(*n)).count(),
                numbers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes at once, as DTP's senders would make them (an inbox refuses
/// connections over its limit).
const PUSHERS: usize = 8;

/// DTP pushes `messages` round the inboxes, [`PUSHERS`] at a time; a push
/// the inbox does not take (refused, 429, 5xx) is tried again shortly, as
/// DTP retries.
async fn push_all(messages: Vec<(String, serde_json::Value)>, inboxes: Vec<String>, key: String) {
    use futures::StreamExt as _;
    futures::stream::iter(messages.into_iter().enumerate())
        .for_each_concurrent(PUSHERS, |(i, (_, message))| {
            let (url, key) = (&inboxes[i % inboxes.len()], &key);
            async move {
                for _ in 0..40 {
                    match push_to_inbox(url, key, &message).await {
                        Ok(a) if a.status == 202 => return,
                        Ok(a) if a.status != 429 && a.status < 500 => {
                            eprintln!("push to {url} refused: {} {}", a.status, a.body);
                            return;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(250)).await,
                    }
                }
                eprintln!("push to {url}: not taken after 40 tries");
            }
        })
        .await;
}

/// The intervention numbers DTP was told are in Primero.
fn notified(trial: &DtpTrial) -> std::collections::HashSet<String> {
    trial.notified().into_iter().collect()
}

/// Kill the WF 1.1 lease holder among three replicas in the middle of a run.
async fn failover(b: &Bench, db: &TestDatabase, sizes: &Sizes) -> anyhow::Result<Failover> {
    let dir = run_dir(b, "failover")?;
    let sims = Simulators::start_loopback().await?;
    let url = db.sibling("failover").await;
    let base = ping_config(b, &sims, &url, FAILOVER_CONCURRENCY)?;
    let mut replicas = Replicas::new();
    start(b, &mut replicas, &dir, "ping", 3, &base, &sims.secret_env())?;
    let pool = sqlx::PgPool::connect(&url).await?;
    // When each case write was applied in Primero.
    let writes: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let writes = writes.clone();
        sims.primero_sim()
            .set_write_hook(Arc::new(move |method, path| {
                if path.starts_with("/api/v2/cases") && (method == "POST" || method == "PATCH") {
                    writes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Instant::now());
                }
            }));
    }
    let latency = b.opts.latency;
    sims.primero_sim().set_latency(latency);
    sims.ping_sim().set_latency(latency);
    let n = sizes.failover;
    super::sections::seed(&sims, FLOW, n, super::sections::Stamps::Spread)?;
    let written = || writes.lock().unwrap_or_else(|p| p.into_inner()).len();
    let deadline = Instant::now() + sizes.budget;
    while written() < n / 5 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "failover: {} of {n} referrals written in {:?}",
            written(),
            sizes.budget
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let name = bridge_store::Lease::flow_name(FLOW);
    let lease = |pool: sqlx::PgPool, name: String| async move {
        sqlx::query_as::<_, (String, bool)>(
            "SELECT owner, expires_at > bridge_stamp(now()) FROM leases WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&pool)
        .await
    };
    let holder = match lease(pool.clone(), name.clone()).await? {
        Some((owner, true)) => owner,
        other => anyhow::bail!("failover: no live lease {name} mid-run: {other:?}"),
    };
    anyhow::ensure!(replicas.kill(&holder), "failover: {holder} is not running");
    let killed = Instant::now();
    let written_at_kill = written();
    let taken_over = loop {
        if let Some((owner, true)) = lease(pool.clone(), name.clone()).await? {
            if owner != holder {
                break killed.elapsed();
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "failover: lease {name} not taken over after the kill of {holder}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Calls arriving and writes applied after the takeover are the new
    // holder's (the dead one's in-flight calls were answered within the
    // latency; the other replicas call no partner while they wait).
    let after = killed + taken_over;
    let resumed = loop {
        let first = sims
            .ping_sim()
            .arrival_times()
            .into_iter()
            .chain(sims.primero_sim().arrival_times())
            .filter(|t| *t >= after)
            .min();
        if let Some(t) = first {
            break t.duration_since(killed);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "failover: no partner call after {holder}'s lease was taken over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let without_progress = loop {
        let next = writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|t| **t >= after)
            .copied();
        if let Some(t) = next {
            break t.duration_since(killed);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "failover: nothing written after {holder}'s lease was taken over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    while !sims.ping_sim().pending_intervention_ids().is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "failover: {} referrals still pending",
            sims.ping_sim().pending_intervention_ids().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_done = killed.elapsed();
    pool.close().await;
    Ok(Failover {
        referrals: n,
        written_at_kill,
        taken_over,
        resumed,
        without_progress,
        all_done,
    })
}

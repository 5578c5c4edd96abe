//! Part 5: the state store (issue 18). The same state-heavy workload on
//! SQLite and on PostgreSQL, side by side in one run: each phase runs on one
//! backend, then on the other, before the next phase. Both stores are
//! wrapped in `Monitored` as the service wraps them; SQLite is a file (WAL,
//! synchronous=FULL), PostgreSQL a database of the cluster
//! `BRIDGE_TEST_POSTGRES_URL` names, or of a throwaway cluster started for
//! the run (bridge_testkit). Without PostgreSQL the part reports why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_store::{
    AuditEntry, Monitored, OpenMode, PostgresStore, RecordRow, RunRow, SqliteStore, Store,
};

use super::report::{num, Report, Section, Table};
use super::Bench;

/// Record tasks at once, as a run's `record_concurrency` would have them.
const CONCURRENCY: usize = 8;

struct Sizes {
    records: usize,
    run_records: usize,
    runs: usize,
    cursors: usize,
    messages: usize,
    audit_batches: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                records: 200,
                run_records: 1_000,
                runs: 1,
                cursors: 100,
                messages: 100,
                audit_batches: 5,
            }
        } else {
            Self {
                records: 5_000,
                run_records: 10_000,
                runs: 3,
                cursors: 2_000,
                messages: 2_000,
                audit_batches: 50,
            }
        }
    }
}

/// Entries per audit append (a run's shares in one transaction).
const AUDIT_BATCH: usize = 100;

/// One phase of the workload: store calls made, and the wall time.
type Measured = (usize, Duration);

/// Per record, as a flow does it: the delivery looked up, the attempts
/// read, the delivery recorded, the attempts cleared; `CONCURRENCY` records
/// at once.
async fn per_record(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<Measured> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(CONCURRENCY) {
                    let key = format!("case-{i}/service-{i}");
                    store.delivery("ping-1.2", &key).await?;
                    store.attempts("ping-1.2", &key).await?;
                    store
                        .record_delivery("ping-1.2", &key, "sha256:accepted", Some("iv-1"))
                        .await?;
                    store.clear_attempts("ping-1.2", &key).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((4 * n, t.elapsed()))
}

/// A replica's fenced delivery records under its flow lease.
async fn fenced(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<Measured> {
    let lease = store
        .lease_acquire("flow:bench", "bench-replica", Duration::from_secs(600))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench lease is held"))?;
    let fence = lease.fence();
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (store, fence) = (store.clone(), fence.clone());
            tokio::spawn(async move {
                for i in (w..n).step_by(CONCURRENCY) {
                    store
                        .record_delivery_fenced(&fence, "ping-2.1", &format!("sv-{i}"), "fp", None)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = t.elapsed();
    store.lease_release(&lease).await?;
    Ok((n, elapsed))
}

/// Runs of `records` outcomes each: started, then finished with every
/// record outcome in one transaction. Counted in record outcomes.
async fn runs(store: &Arc<dyn Store>, runs: usize, records: usize) -> anyhow::Result<Measured> {
    let t = Instant::now();
    for r in 0..runs {
        let id = format!("bench-run-{r}-{}", std::process::id());
        let mut run = RunRow {
            id: id.clone(),
            flow: "ping-1.1".into(),
            trigger: "manual".into(),
            started_at: bridge_store::now(),
            outcome: "running".into(),
            ..RunRow::default()
        };
        store.run_started(&run).await?;
        let outcomes: Vec<RecordRow> = (0..records)
            .map(|i| RecordRow {
                run_id: id.clone(),
                flow: "ping-1.1".into(),
                source_id: format!("iv-{i}"),
                target_id: Some(format!("case-{i}")),
                status: "created".into(),
                attempt: 0,
                reason_code: None,
                reason: None,
                at: bridge_store::now(),
            })
            .collect();
        run.ended_at = Some(bridge_store::now());
        run.fetched = records as i64;
        run.delivered = records as i64;
        run.outcome = "ok".into();
        store.run_finished(&run, &outcomes).await?;
    }
    Ok((runs * records, t.elapsed()))
}

/// Cursor commits one after the other (a cursor flow commits in order).
async fn cursors(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<Measured> {
    let t = Instant::now();
    for i in 0..n {
        store
            .set_cursor(
                "ping-1.2",
                &format!("2026-01-01T00:00:{:02}.{:03}Z", i / 1000 % 60, i % 1000),
            )
            .await?;
    }
    Ok((n, t.elapsed()))
}

/// The inbox: messages accepted (`CONCURRENCY` senders), then claimed ten
/// at a time by `CONCURRENCY` processors, each deleted once processed.
async fn inbox(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<Measured> {
    let body = vec![0x5a_u8; 2048];
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (store, body) = (store.clone(), body.clone());
            tokio::spawn(async move {
                for i in (w..n).step_by(CONCURRENCY) {
                    store
                        .inbox_put(
                            &format!("msg-{i}"),
                            "PrimeroOutgoingReferral",
                            "api_key",
                            &body,
                        )
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let processors: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut calls = 0;
                loop {
                    let claimed = store
                        .inbox_claim(&format!("processor-{w}"), Duration::from_secs(60), 10)
                        .await?;
                    calls += 1;
                    if claimed.is_empty() {
                        return anyhow::Ok(calls);
                    }
                    for c in claimed {
                        store.inbox_delete(&c.message.id).await?;
                        calls += 1;
                    }
                }
            })
        })
        .collect();
    let mut calls = n;
    for p in processors {
        calls += p.await??;
    }
    anyhow::ensure!(
        store.inbox_all().await?.is_empty(),
        "the inbox was not drained"
    );
    Ok((calls, t.elapsed()))
}

/// Audit appends of [`AUDIT_BATCH`] entries, from `CONCURRENCY` appenders
/// continuing one chain. Counted in entries.
async fn audit(store: &Arc<dyn Store>, batches: usize) -> anyhow::Result<Measured> {
    let entry = |i: usize| AuditEntry {
        at: bridge_store::now(),
        flow: "ping-1.1".into(),
        run_id: "bench".into(),
        event: "delivered".into(),
        source_id: format!("iv-{i}"),
        target_id: Some(format!("case-{i}")),
        case_id: Some(format!("case-{i}")),
        permitted_by: Some("cw_bench".into()),
        consent: "recorded".into(),
        job: "ping-1.1".into(),
        job_version: "1.0.0".into(),
        job_hash: "ab".repeat(32),
        mappings_hash: "cd".repeat(32),
    };
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in (w..batches).step_by(CONCURRENCY) {
                    let batch: Vec<AuditEntry> = (0..AUDIT_BATCH)
                        .map(|i| entry(b * AUDIT_BATCH + i))
                        .collect();
                    store.audit_append(&batch).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = t.elapsed();
    let v = store.audit_verify().await?;
    anyhow::ensure!(v.ok(), "the audit chain does not verify: {:?}", v.problem);
    Ok((batches * AUDIT_BATCH, elapsed))
}

fn rate(m: &Measured) -> f64 {
    m.0 as f64 / m.1.as_secs_f64().max(1e-9)
}

pub(crate) async fn state_store(b: &Bench, report: &mut Report) -> anyhow::Result<Section> {
    let sizes = Sizes::new(b.opts.quick);
    let file = b.tmp.join("state-bench.db");
    let sqlite: Arc<dyn Store> = Arc::new(Monitored::new(
        SqliteStore::open(&file, OpenMode::Init).await?,
    ));
    // Kept until the end of the part: the database is dropped with it.
    let database = bridge_testkit::postgres::try_database().await;
    let postgres: Result<Arc<dyn Store>, String> = match &database {
        Ok(db) => match PostgresStore::open(db.url(), OpenMode::Init).await {
            Ok(s) => Ok(Arc::new(Monitored::new(s))),
            Err(e) => Err(e.to_string()),
        },
        Err(why) => Err(why.clone()),
    };
    if let Err(why) = &postgres {
        b.say(format!("PostgreSQL not measured: {why}"));
    }
    let version = match &database {
        Ok(db) => sqlx_version(db.url()).await,
        Err(_) => None,
    };

    let mut table = Table::new(&[
        "workload",
        "store calls",
        "SQLite calls/s",
        "PostgreSQL calls/s",
        "PostgreSQL / SQLite",
    ]);
    let phases: [(&str, usize); 6] = [
        (
            "per record: delivery lookup, attempts, record_delivery, clear_attempts (8 records at once)",
            4 * sizes.records,
        ),
        (
            "fenced record_delivery under a flow lease (8 at once)",
            sizes.records,
        ),
        (
            "run_finished with its record outcomes (counted in records)",
            sizes.runs * sizes.run_records,
        ),
        ("cursor commits, one after the other", sizes.cursors),
        (
            "inbox: put (8 senders), claim 10 at a time and delete (8 processors)",
            sizes.messages,
        ),
        (
            "audit_append, 100 entries a batch, 8 appenders (counted in entries)",
            sizes.audit_batches * AUDIT_BATCH,
        ),
    ];
    let mut ratios = Vec::new();
    for (i, (label, _)) in phases.iter().enumerate() {
        let mut measured = Vec::new();
        for store in [Ok(&sqlite), postgres.as_ref()] {
            let Ok(store) = store else {
                measured.push(None);
                continue;
            };
            let m = match i {
                0 => per_record(store, sizes.records).await?,
                1 => fenced(store, sizes.records).await?,
                2 => runs(store, sizes.runs, sizes.run_records).await?,
                3 => cursors(store, sizes.cursors).await?,
                4 => inbox(store, sizes.messages).await?,
                _ => audit(store, sizes.audit_batches).await?,
            };
            measured.push(Some(m));
        }
        let (lite, pg) = (measured[0].unwrap_or_default(), measured[1]);
        b.say(format!(
            "{label}: SQLite {:.0}/s, PostgreSQL {}",
            rate(&lite),
            pg.map_or("not measured".into(), |m| format!("{:.0}/s", rate(&m)))
        ));
        let ratio = pg.map(|m| rate(&m) / rate(&lite));
        if let Some(r) = ratio {
            ratios.push(r);
        }
        table.row(vec![
            label.to_string(),
            num(lite.0 as f64, 0),
            num(rate(&lite), 0),
            pg.map_or("not measured".into(), |m| num(rate(&m), 0)),
            ratio.map_or("-".into(), |r| format!("{r:.2}×")),
        ]);
    }
    let measured = match (&postgres, ratios.is_empty()) {
        (Ok(_), false) => {
            let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
            format!("PostgreSQL at {geo:.2}× SQLite's rate (geometric mean of the workloads)")
        }
        (Err(why), _) => format!("PostgreSQL not measured: {why}"),
        _ => "not measured".into(),
    };
    report.target(
        "state store: the same workload on SQLite and PostgreSQL, side by side",
        measured,
        postgres.is_ok().then_some(true),
    );
    let mut intro = vec![format!(
        "The same state-heavy workload on each backend, phase by phase (SQLite, then PostgreSQL, \
         then the next phase), each wrapped in `Monitored` as the service uses it. SQLite: a file \
         in WAL mode with synchronous=FULL and one connection (its writes are serialized \
         anyway). PostgreSQL{}: a database on this machine over loopback TCP, a pool of up to \
         10 connections, the server's defaults (fsync on). Ratios above 1 mean PostgreSQL was \
         faster.",
        version.map(|v| format!(" {v}")).unwrap_or_default()
    )];
    if let Err(why) = &postgres {
        intro.push(format!("PostgreSQL was not measured: {why}."));
    }
    Ok(Section {
        intro,
        tables: vec![table],
        notes: vec![
            "A store call is one method of the `Store` trait (one statement or one transaction); \
             SQLite's are in-process, PostgreSQL's a round trip each. Concurrent phases let \
             PostgreSQL's pool work on several calls at once, where SQLite's single connection \
             takes them in turn."
                .into(),
        ],
        ..Section::default()
    })
}

/// The server's version, for the report.
async fn sqlx_version(url: &str) -> Option<String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let v: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    Some(v.split_whitespace().next().unwrap_or(&v).to_string())
}

//! The state database (issue 14): one writer at a time, and a database that
//! is lost, emptied, foreign or full is noticed instead of silently replaced.
//! Real `bridge` processes against the simulators, as an operator runs them.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bridge_demo::scenario::Simulators;
use bridge_inbox::validate::required_fields;
use bridge_inbox::{router, InboxKind, InboxState, DEFAULT_MAX_BODY_BYTES, INBOX_PATH};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_store::{OpenMode, Sealer, SqliteStore};
use serde_json::{json, Value};

use super::support::short;
use super::{Kind, Row};

const SECTION: &str = "state database";
const JOB: &str = "ping-1.1";
const TODAY: &str = "2025-06-01";
const IN_USE: &str = "is in use by another bridge process";

pub async fn run() -> Vec<Row> {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[JOB.to_string()]).expect("jobs build");
    let sims = Simulators::start_loopback().await.expect("simulators");
    vec![
        two_flow_runs_at_once(&sims, &project).await,
        a_running_service_keeps_other_writers_out(&sims, &project).await,
        database_deleted_under_the_service(&sims, &project).await,
        inbox_after_the_database_was_deleted().await,
        missing_database_without_init(&sims, &project).await,
        truncated_database().await,
        foreign_files().await,
        disk_full(&sims, &project).await,
        signals(&sims, &project).await,
    ]
}

// ---------------------------------------------------------------------------
// Helpers

fn config(sims: &Simulators, project: &ProjectDirs, dir: &Path, extra: &str) -> PathBuf {
    let file = dir.join("bridge.toml");
    let text = sims.config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab"));
    std::fs::write(&file, format!("{text}\n{extra}\n")).unwrap();
    file
}

/// Only `[state]`: enough for the commands that touch nothing else.
fn state_only_config(dir: &Path) -> PathBuf {
    let file = dir.join("bridge.toml");
    std::fs::write(
        &file,
        "[state]\npath = \"state.db\"\n\n[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"BRIDGE_TEST_UNSET\" }\n\n[jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n",
    )
    .unwrap();
    file
}

fn bridge(sims: Option<&Simulators>, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge"));
    cmd.args(args).current_dir(dir).env("BRIDGE_LOG", "warn");
    // The component cache is the test run's one (inherited): a fresh cache
    // per case would compile every job again in every case.
    if let Some(sims) = sims {
        cmd.envs(sims.secret_env());
    }
    cmd
}

/// Run to the end off the async threads (the simulators live on them).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run bridge"))
        .await
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last `error:` line of a command, for a table cell.
fn error_line(out: &Output) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error"))
        .unwrap_or("")
        .to_string();
    short(&line, 160)
}

/// `bridge run` in the background, once it says it runs.
struct Service {
    child: Child,
    metrics: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Service {
    fn start(mut cmd: Command) -> Result<Self, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more: a closed
            // pipe would fail the service's next line of output.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Generous: a cold component cache compiles every job first.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut metrics = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("metrics listening on ") {
                        metrics = Some(rest.trim_end_matches("/metrics").to_string());
                    }
                    if line.starts_with("bridge running") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = stderr.join().unwrap_or_default();
                    return Err(format!("did not start: {}", short(text.trim(), 200)));
                }
            }
        }
        Ok(Self {
            child,
            metrics: metrics.unwrap_or_default(),
            stderr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.metrics)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// `/readyz` until `want(status, body)` or the time is up; the last answer.
    async fn readyz_until(
        &self,
        limit: Duration,
        want: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get("/readyz").await;
            if want(status, &body) || Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    /// SIGTERM (SIGKILL when it does not stop); its stderr.
    async fn stop(self, sig: &str) -> String {
        self.signal(sig);
        let mut child = self.child;
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        })
        .await;
        self.stderr.join().unwrap_or_default()
    }
}

/// Seed `n` children with one referral each at PING.
fn seed(sims: &Simulators, seed: u64, n: usize, base: u64) -> Vec<String> {
    let mut g = PeopleGenerator::new(seed);
    (0..n)
        .map(|i| {
            let p = g.person();
            sims.ping_sim()
                .add_intervention(SimIntervention::for_person(p.clone(), base + i as u64));
            p.progres_id
        })
        .collect()
}

/// Children with more than one Primero case.
fn children_with_two_cases(sims: &Simulators, children: &[String]) -> u32 {
    children
        .iter()
        .filter(|id| sims.primero_sim().find_by_individual_no(id).len() > 1)
        .count() as u32
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

// ---------------------------------------------------------------------------
// §1 One writer

async fn two_flow_runs_at_once(sims: &Simulators, project: &ProjectDirs) -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "Two `bridge flow run ping-1.1` at once on one state database (Primero answers in 150 ms, 7 children)",
        "one runs, the other is refused naming the database; no child gets a second case",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = config(sims, project, tmp.path(), "");
    let db = tmp.path().join("state.db");
    // Created before the race: `--init` is for a deployment's first start.
    drop(SqliteStore::open(&db, OpenMode::Init).await.unwrap());
    let children = seed(sims, 1401, 7, 14_000);
    sims.primero_sim().set_latency(Duration::from_millis(150));
    let args = [
        "flow",
        "run",
        "ping-1.1",
        "--today",
        TODAY,
        "--config",
        file.to_str().unwrap(),
    ];
    let (a, b) = tokio::join!(
        output(bridge(Some(sims), tmp.path(), &args)),
        output(bridge(Some(sims), tmp.path(), &args))
    );
    sims.primero_sim().set_latency(Duration::ZERO);
    let db_text = db.display().to_string();
    let refused = [&a, &b]
        .iter()
        .filter(|o| {
            o.status.code() == Some(1) && stderr(o).contains(IN_USE) && stderr(o).contains(&db_text)
        })
        .count();
    let ran = [&a, &b]
        .iter()
        .filter(|o| matches!(o.status.code(), Some(0) | Some(2)))
        .count();
    let twice = children_with_two_cases(sims, &children);
    row.observed(
        format!(
            "exit {:?} and {:?}; {refused} refused naming the database; {twice} of {} children got a second case",
            a.status.code(),
            b.status.code(),
            children.len()
        ),
        refused == 1 && ran == 1 && twice == 0,
    )
    .duplicates(twice)
}

async fn a_running_service_keeps_other_writers_out(
    sims: &Simulators,
    project: &ProjectDirs,
) -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "`bridge run` holds the database; then `flow run`, `cursor set`, `runs`, `dead-letter list`; then the service is SIGKILLed",
        "writers refused naming the database and the holder (pid, host, command, since); read-only commands work; after SIGKILL a new writer starts",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = config(
        sims,
        project,
        tmp.path(),
        "[metrics]\nlisten = \"127.0.0.1:0\"",
    );
    let c = file.to_str().unwrap().to_string();
    let db = tmp.path().join("state.db").display().to_string();
    let service = match Service::start(bridge(
        Some(sims),
        tmp.path(),
        &["run", "--init", "--config", &c],
    )) {
        Ok(s) => s,
        Err(e) => return row.observed(e, false),
    };
    let pid = format!("pid {}", service.pid());
    let flow = output(bridge(
        Some(sims),
        tmp.path(),
        &["flow", "run", "ping-1.1", "--today", TODAY, "--config", &c],
    ))
    .await;
    let cursor = output(bridge(
        None,
        tmp.path(),
        &[
            "cursor",
            "set",
            "ping-2.1",
            "2025-06-01T00:00:00Z",
            "--config",
            &c,
        ],
    ))
    .await;
    let names_holder = |o: &Output| {
        let e = stderr(o);
        o.status.code() == Some(1)
            && e.contains(IN_USE)
            && e.contains(&db)
            && e.contains(&pid)
            && e.contains("bridge run --init")
            && e.contains("since 20")
    };
    let runs = output(bridge(None, tmp.path(), &["runs", "--config", &c])).await;
    let dead = output(bridge(
        None,
        tmp.path(),
        &["dead-letter", "list", "--config", &c],
    ))
    .await;
    let show = output(bridge(
        None,
        tmp.path(),
        &["cursor", "show", "--config", &c],
    ))
    .await;
    let readers_ok = [&runs, &dead, &show].iter().all(|o| o.status.success());
    service.stop("-KILL").await;
    let after = output(bridge(
        Some(sims),
        tmp.path(),
        &["flow", "run", "ping-1.1", "--today", TODAY, "--config", &c],
    ))
    .await;
    let restarted = matches!(after.status.code(), Some(0) | Some(2));
    row.observed(
        format!(
            "flow run: exit {:?}, names holder: {}; cursor set: exit {:?}, names holder: {}; runs/dead-letter list/cursor show: exit {:?}/{:?}/{:?}; after SIGKILL flow run: exit {:?}; {}",
            flow.status.code(),
            names_holder(&flow),
            cursor.status.code(),
            names_holder(&cursor),
            runs.status.code(),
            dead.status.code(),
            show.status.code(),
            after.status.code(),
            error_line(&flow),
        ),
        names_holder(&flow) && names_holder(&cursor) && readers_ok && restarted,
    )
}

// ---------------------------------------------------------------------------
// §2 A lost, emptied, foreign or full database

async fn database_deleted_under_the_service(sims: &Simulators, project: &ProjectDirs) -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "The database files are deleted under a running `bridge run`; then it is restarted without `--init`",
        "/readyz 503 `store-replaced` within 3 s, counted in bridge_store_errors_total; the restart is refused (no new empty database)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = config(
        sims,
        project,
        tmp.path(),
        "[metrics]\nlisten = \"127.0.0.1:0\"",
    );
    let c = file.to_str().unwrap().to_string();
    let db = tmp.path().join("state.db");
    let service = match Service::start(bridge(
        Some(sims),
        tmp.path(),
        &["run", "--init", "--config", &c],
    )) {
        Ok(s) => s,
        Err(e) => return row.observed(e, false),
    };
    // Ready first (the service may still be starting), then the files go.
    let (before, _) = service
        .readyz_until(Duration::from_secs(10), |s, _| s == 200)
        .await;
    remove_db(&db);
    let (status, body) = service
        .readyz_until(Duration::from_secs(3), |s, _| s != 200)
        .await;
    let (_, metrics) = service.get("/metrics").await;
    let counted = metrics
        .lines()
        .any(|l| l.starts_with("bridge_store_errors_total{code=\"store-replaced\"}"));
    service.stop("-TERM").await;
    let restart = output(bridge(
        Some(sims),
        tmp.path(),
        &["run", "--once", "--config", &c],
    ))
    .await;
    let refused = restart.status.code() == Some(1)
        && stderr(&restart).contains("no state database at")
        && stderr(&restart).contains("--init");
    let created = db.exists();
    row.observed(
        format!(
            "/readyz {before} before, then {status} {}; counted: {counted}; restart without --init: exit {:?}, new database created: {created}; {}",
            short(body.trim(), 80),
            restart.status.code(),
            error_line(&restart)
        ),
        before == 200
            && status == 503
            && body.contains("store-replaced")
            && counted
            && refused
            && !created,
    )
}

fn inbox_message() -> Vec<u8> {
    let kind = InboxKind::PrimeroOutgoingReferral;
    let mut row = serde_json::Map::new();
    for f in required_fields(kind) {
        row.insert((*f).to_string(), json!("803-24-PRTITV-0000001"));
    }
    serde_json::to_vec(&json!({"request_type": kind.request_type(), "interventions": [row]}))
        .unwrap()
}

async fn inbox_after_the_database_was_deleted() -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "4 valid messages pushed to the inbox after its database files were deleted",
        "503 `store-unavailable` for each (DTP sends again later); none acknowledged into the deleted file",
    );
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("state.db");
    let store = std::sync::Arc::new(SqliteStore::open(&db, OpenMode::Init).await.unwrap());
    let key = "fault-matrix-state-key-0123456789";
    let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let state = InboxState::new(store, sealer, key, DEFAULT_MAX_BODY_BYTES);
    remove_db(&db);
    let mut accepted = 0u32;
    let mut refused = 0;
    for _ in 0..4 {
        let request = axum::http::Request::post(INBOX_PATH)
            .header("content-type", "application/json")
            .header("x-api-key", key)
            .body(Body::from(inbox_message()))
            .unwrap();
        let response = tower::ServiceExt::oneshot(router(state.clone()), request)
            .await
            .expect("the router always answers");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            202 => accepted += 1,
            503 if body["error"] == "store-unavailable" => refused += 1,
            _ => {}
        }
    }
    row.observed(
        format!("{accepted} of 4 answered 202 into the deleted file, {refused} answered 503"),
        accepted == 0 && refused == 4,
    )
    .lost(accepted)
}

async fn missing_database_without_init(sims: &Simulators, project: &ProjectDirs) -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "No database at `state.path`: `bridge run`, `flow run`, `cursor set` without `--init`, and `bridge runs`",
        "each refused with a message saying how to create it (`--init`) or restore it; no file created",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = config(sims, project, tmp.path(), "");
    let c = file.to_str().unwrap().to_string();
    let mut codes = Vec::new();
    let mut all_refused = true;
    let mut last = String::new();
    for args in [
        vec!["run", "--once", "--config", &c],
        vec!["flow", "run", "ping-1.1", "--config", &c],
        vec![
            "cursor",
            "set",
            "ping-2.1",
            "2025-06-01T00:00:00Z",
            "--config",
            &c,
        ],
        vec!["runs", "--config", &c],
    ] {
        let out = output(bridge(Some(sims), tmp.path(), &args)).await;
        let e = stderr(&out);
        all_refused &= out.status.code() == Some(1)
            && e.contains("no state database at")
            && e.contains("--init");
        codes.push(out.status.code());
        last = error_line(&out);
    }
    let created = tmp.path().join("state.db").exists();
    row.observed(
        format!("exit {codes:?}; new database created: {created}; {last}"),
        all_refused && !created,
    )
}

async fn truncated_database() -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "The database file truncated to 0 bytes: `bridge runs`, and `cursor set --init`",
        "refused as an empty file (not started as a new database), even with `--init`",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = state_only_config(tmp.path());
    let c = file.to_str().unwrap().to_string();
    let db = tmp.path().join("state.db");
    let store = SqliteStore::open(&db, OpenMode::Init).await.unwrap();
    store.pool().close().await;
    drop(store);
    // Emptied: the file at 0 bytes and no WAL beside it (a main file at 0
    // bytes with a WAL is a database killed before its first checkpoint).
    remove_db(&db);
    std::fs::File::create(&db).unwrap();
    let runs = output(bridge(None, tmp.path(), &["runs", "--config", &c])).await;
    let init = output(bridge(
        None,
        tmp.path(),
        &[
            "cursor",
            "set",
            "--init",
            "ping-2.1",
            "2025-06-01T00:00:00Z",
            "--config",
            &c,
        ],
    ))
    .await;
    let refused = |o: &Output| o.status.code() == Some(1) && stderr(o).contains("empty file");
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(u64::MAX);
    row.observed(
        format!(
            "runs: exit {:?}; cursor set --init: exit {:?}; file left at {size} bytes; {}",
            runs.status.code(),
            init.status.code(),
            error_line(&init)
        ),
        refused(&runs) && refused(&init) && size == 0,
    )
}

async fn foreign_files() -> Row {
    let row = Row::new(
        SECTION,
        Kind::BadInput,
        "`state.path` names a text file, then another application's SQLite database: `cursor set --init`",
        "refused: not a bridge state database; the file is left as it was",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = state_only_config(tmp.path());
    let c = file.to_str().unwrap().to_string();
    let db = tmp.path().join("state.db");
    let args = [
        "cursor",
        "set",
        "--init",
        "ping-2.1",
        "2025-06-01T00:00:00Z",
        "--config",
        &c,
    ];
    let text = b"this is a note, not a database\n".repeat(8);
    std::fs::write(&db, &text).unwrap();
    let on_text = output(bridge(None, tmp.path(), &args)).await;
    let text_kept = std::fs::read(&db).unwrap() == text;

    remove_db(&db);
    {
        use sqlx::Connection as _;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let on_other = output(bridge(None, tmp.path(), &args)).await;
    let other_kept = std::fs::read(&db).unwrap() == before;
    let refused = |o: &Output| {
        o.status.code() == Some(1) && stderr(o).contains("is not a bridge state database")
    };
    row.observed(
        format!(
            "text file: exit {:?}, unchanged: {text_kept}; other SQLite database: exit {:?}, unchanged: {other_kept}; {}",
            on_text.status.code(),
            on_other.status.code(),
            error_line(&on_other)
        ),
        refused(&on_text) && refused(&on_other) && text_kept && other_kept,
    )
}

async fn disk_full(sims: &Simulators, project: &ProjectDirs) -> Row {
    let row = Row::new(
        SECTION,
        Kind::Fault,
        "The disk fills under `bridge run` (a run every second; file size limit `ulimit -f` at the database's size + 32 KiB)",
        "/readyz 503 `store-full` and bridge_store_errors_total{code=\"store-full\"} counts",
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = config(
        sims,
        project,
        tmp.path(),
        "[schedule]\n\"ping-1.1\" = \"* * * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"",
    );
    let c = file.to_str().unwrap().to_string();
    // The database (and the component cache, if cold) are made first,
    // without a limit.
    let first = output(bridge(
        Some(sims),
        tmp.path(),
        &[
            "flow", "run", "--init", "ping-1.1", "--today", TODAY, "--config", &c,
        ],
    ))
    .await;
    if !matches!(first.status.code(), Some(0) | Some(2)) {
        return row.observed(format!("first run failed: {}", error_line(&first)), false);
    }
    // Writes past the limit fail (SIGXFSZ ignored) as on a full disk. The
    // limit leaves the database as it is room to start, then the WAL fills
    // it within seconds (`sh` counts 512-byte blocks).
    // The limit is per file: it must leave room over the database and over
    // a write-ahead log the first run may have left behind (whether it did
    // depends on how fast that process closed its connections).
    let size_of = |name: &str| {
        std::fs::metadata(tmp.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let size = size_of("state.db").max(size_of("state.db-wal"));
    let blocks = (size + 32 * 1024).max(64 * 1024) / 512;
    let limit = format!("ulimit -f {blocks} && trap '' XFSZ && exec \"$0\" \"$@\"");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &limit,
        env!("CARGO_BIN_EXE_bridge"),
        "run",
        "--config",
        &c,
    ])
    .current_dir(tmp.path())
    .env("BRIDGE_LOG", "warn")
    .envs(sims.secret_env());
    let service = match Service::start(cmd) {
        Ok(s) => s,
        Err(e) => return row.observed(e, false),
    };
    let (status, body) = service
        .readyz_until(Duration::from_secs(60), |s, _| s == 503)
        .await;
    let (_, metrics) = service.get("/metrics").await;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("bridge_store_errors_total{code=\"store-full\"}"))
        .unwrap_or("")
        .to_string();
    service.stop("-TERM").await;
    row.observed(
        format!(
            "/readyz {status} {}; {}",
            short(body.trim(), 80),
            if counted.is_empty() {
                "no store-full count".to_string()
            } else {
                counted.clone()
            }
        ),
        status == 503 && body.contains("store-full") && !counted.is_empty(),
    )
}

// ---------------------------------------------------------------------------
// §7 Signals

/// A loopback port free right now (for a listener that must keep its port
/// across a reload).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn signals(sims: &Simulators, project: &ProjectDirs) -> Row {
    let row = Row::new(
        "signals",
        Kind::Fault,
        "SIGUSR1, SIGHUP (twice: a good configuration, then a broken one), then SIGQUIT to `bridge run` with a run every second",
        "alive after USR1 and both HUPs (the good one reloaded, the broken one refused and logged); SIGQUIT stops it cleanly: exit 0, no run left `running`",
    );
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = config(
        sims,
        project,
        tmp.path(),
        &format!("[schedule]\n\"ping-1.1\" = \"* * * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\""),
    );
    let c = file.to_str().unwrap().to_string();
    let mut cmd = bridge(Some(sims), tmp.path(), &["run", "--init", "--config", &c]);
    cmd.env("BRIDGE_LOG", "info");
    let service = match Service::start(cmd) {
        Ok(s) => s,
        Err(e) => return row.observed(e, false),
    };
    let alive = |service: &Service| {
        let mut probe = Command::new("kill");
        probe.args(["-0", &service.pid().to_string()]);
        probe.status().is_ok_and(|s| s.success())
    };
    let mut notes = Vec::new();
    let mut ok = true;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.signal("-USR1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_usr1 = alive(&service) && service.get("/healthz").await.0 == 200;
    notes.push(format!(
        "after USR1: {}",
        if after_usr1 { "running" } else { "GONE" }
    ));
    ok &= after_usr1;

    service.signal("-HUP");
    // The runs in flight finish, then the service starts again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, _) = service
        .readyz_until(Duration::from_secs(30), |s, _| s == 200)
        .await;
    let after_hup = alive(&service) && status == 200;
    notes.push(format!(
        "after HUP: {}",
        if after_hup { "running" } else { "GONE" }
    ));
    ok &= after_hup;

    // A broken configuration is refused; the service keeps the one it has.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        good.replace("[schedule]", "[schedule]\n\"ping-1.1\" = \"never\""),
    )
    .unwrap();
    service.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_bad_hup = alive(&service) && service.get("/healthz").await.0 == 200;
    notes.push(format!(
        "after a broken HUP: {}",
        if after_bad_hup { "running" } else { "GONE" }
    ));
    ok &= after_bad_hup;
    std::fs::write(&file, good).unwrap();

    service.signal("-QUIT");
    let mut child = service.child;
    let code = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    })
    .await
    .unwrap_or(None);
    let log = service.stderr.join().unwrap_or_default();
    notes.push(format!("QUIT: exit {code:?}"));
    ok &= code == Some(0);
    let reloaded = log.contains("starting again with the reloaded configuration");
    let refused = log.contains("keeping the current one");
    notes.push(format!(
        "reload logged: {reloaded}; broken config refused: {refused}"
    ));
    ok &= reloaded && refused;
    let running = match SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Existing).await {
        Ok(store) => {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE outcome = 'running'")
                .fetch_one(store.pool())
                .await
                .unwrap_or(-1)
        }
        Err(_) => -1,
    };
    notes.push(format!("runs left running: {running}"));
    ok &= running == 0;
    row.observed(notes.join("; "), ok)
}

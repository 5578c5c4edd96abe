//! A real PostgreSQL for the tests that need one.
//!
//! [`database`] gives each test a fresh database of its own (`CREATE
//! DATABASE`, dropped when the [`TestDatabase`] is). The cluster holding
//! them is, in order of preference:
//! - the one `BRIDGE_TEST_POSTGRES_URL` names (what `.ci/run` starts): a URL
//!   whose user may create databases, e.g. `postgres://postgres@127.0.0.1:5544/postgres`;
//! - else a throwaway cluster this test process starts once, on first use:
//!   `initdb` into a temporary folder and `postgres` on a free loopback port
//!   (as the `postgres` user when run as root, since PostgreSQL refuses
//!   root), stopped and deleted when the process exits.
//!
//! Without either (PostgreSQL's binaries are not installed) the test fails
//! and says what to install, unless `BRIDGE_TEST_POSTGRES=skip` is set:
//! then it prints that it skipped. A test never passes silently without
//! PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// An existing cluster to use (its URL may create databases).
pub const URL_VAR: &str = "BRIDGE_TEST_POSTGRES_URL";
/// `skip`: the tests that need PostgreSQL print that they skip and pass.
pub const SWITCH_VAR: &str = "BRIDGE_TEST_POSTGRES";

/// What to do when there is no PostgreSQL: part of every refusal.
const INSTALL_HINT: &str = "install PostgreSQL's server binaries (Debian: `apt-get install \
     postgresql`; initdb, postgres and pg_isready are looked for in /usr/lib/postgresql/*/bin \
     and on PATH), or set BRIDGE_TEST_POSTGRES_URL to a cluster whose user may CREATE DATABASE, \
     or set BRIDGE_TEST_POSTGRES=skip to skip the PostgreSQL tests (they then say so)";

/// A database of its own for one test, dropped with this value.
pub struct TestDatabase {
    url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// The URL to give the bridge (`[state] url`) or `PostgresStore::open`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every row of every table of every schema the bridge may have written
    /// in this database (all but PostgreSQL's own), as text, by table:
    /// to look for personal data at rest, or to tell whether anything
    /// changed.
    pub async fn table_texts(&self) -> Vec<(String, Vec<String>)> {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
             WHERE table_type = 'BASE TABLE'
               AND table_schema NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1, 2",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list tables");
        let mut out = Vec::new();
        for (schema, table) in tables {
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT t::text FROM \"{schema}\".\"{table}\" t ORDER BY 1"
            ))
            .fetch_all(&mut conn)
            .await
            .expect("read table");
            out.push((format!("{schema}.{table}"), rows));
        }
        let _ = conn.close().await;
        out
    }

    /// The URL of a new database on the same cluster (e.g. a second
    /// deployment in one test); dropped with this one.
    pub async fn sibling(&self, tag: &str) -> String {
        let name = format!("{}_{tag}", self.name);
        create(&self.admin, &name).await;
        SIBLINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.admin.clone(), name.clone()));
        with_database(&self.admin, &name)
    }
}

/// Siblings, dropped with the database they were made from (or at exit).
static SIBLINGS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let mut names = vec![self.name.clone()];
        let prefix = format!("{}_", self.name);
        SIBLINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, n)| {
                let mine = n.starts_with(&prefix);
                if mine {
                    names.push(n.clone());
                }
                !mine
            });
        // Drop runs inside the test's runtime: a thread of its own with
        // its own runtime does the (best-effort) cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    for name in names {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A fresh database for the calling test, or `None` (with a line saying
/// so) when `BRIDGE_TEST_POSTGRES=skip` is set and there is no PostgreSQL.
/// Panics with what to install otherwise.
pub async fn database() -> Option<TestDatabase> {
    match try_database().await {
        Ok(db) => Some(db),
        Err(why) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("this test")
                .to_string();
            if std::env::var(SWITCH_VAR).as_deref() == Ok("skip") {
                eprintln!("SKIPPED {test}: needs PostgreSQL ({why}); {SWITCH_VAR}=skip is set");
                return None;
            }
            panic!("{test} needs PostgreSQL: {why}. To run it, {INSTALL_HINT}");
        }
    }
}

/// A fresh database, or why there is no PostgreSQL to make one in (for a
/// tool that reports instead of failing, such as `bridge bench`).
pub async fn try_database() -> Result<TestDatabase, String> {
    let admin = admin_url()?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "bridge_test_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000_000)
            .unwrap_or(0),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    create(&admin, &name).await;
    Ok(TestDatabase {
        url: with_database(&admin, &name),
        name,
        admin,
    })
}

async fn create(admin: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on the test PostgreSQL: {e}"));
    let _ = conn.close().await;
}

/// `admin` with its database (the URL path) replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    // The admin URL is ours or CI's: `scheme://authority/db?params`.
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The cluster's admin URL: the environment's, or the throwaway cluster's
/// (started on first use).
fn admin_url() -> Result<String, String> {
    if let Ok(url) = std::env::var(URL_VAR) {
        if !url.trim().is_empty() {
            return Ok(url);
        }
    }
    static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster).clone()
}

/// The folder of PostgreSQL's server binaries: the newest
/// /usr/lib/postgresql/<version>/bin, else wherever `initdb` is on PATH.
pub fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| {
            ["initdb", "postgres", "pg_isready"]
                .iter()
                .all(|b| dir.join(b).is_file())
        })
    })
}

/// The throwaway cluster's postmaster and folder, for the exit handler.
static RUNNING: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

/// Start the throwaway cluster on a thread that lives as long as the
/// process: the postmaster is that thread's child and gets SIGQUIT (an
/// immediate shutdown) if the process dies without running its exit handler.
fn start_cluster() -> Result<String, String> {
    let bin = binaries().ok_or_else(|| "PostgreSQL's binaries were not found".to_string())?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let result = launch(&bin);
            let started = result.is_ok();
            let _ = tx.send(result);
            if started {
                // The postmaster's parent-death signal is tied to this thread.
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the cluster's thread ended".to_string())?
}

/// The user the cluster runs as: `postgres` when we are root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            "running as root, and there is no `postgres` user to run PostgreSQL as (PostgreSQL \
             refuses root; Debian's postgresql package creates the user)"
                .to_string()
        })
}

fn launch(bin: &Path) -> Result<String, String> {
    let user = run_as()?;
    let root = std::env::temp_dir().join(format!(
        "bridge-test-postgres-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let data = root.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&data, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", data.display()))?;
    }
    let as_user = |cmd: &mut Command| {
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .stdin(Stdio::null());
    as_user(&mut initdb);
    let out = initdb
        .output()
        .map_err(|e| format!("initdb does not start: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&root);
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut last = String::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut server = Command::new(bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut server);
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl is async-signal-safe; it runs in the child
            // between fork and exec, after the switch of user.
            unsafe {
                server.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                    Ok(())
                });
            }
        }
        let mut child = server
            .spawn()
            .map_err(|e| format!("postgres does not start: {e}"))?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                last = format!("postgres exited ({status}): {}", err.trim());
                break;
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                // Its log goes nowhere from now on (a full pipe would block it).
                drop(child.stderr.take());
                *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((child.id(), root.clone()));
                // SAFETY: registering a plain extern "C" fn.
                unsafe { libc::atexit(stop_cluster) };
                drop(child);
                eprintln!("test PostgreSQL: {url} (data in {})", data.display());
                return Ok(url);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                last = "postgres did not accept connections within 60 s".into();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Err(last)
}

/// At exit: an immediate shutdown of the throwaway cluster, then its folder
/// goes.
extern "C" fn stop_cluster() {
    let Some((pid, root)) = RUNNING.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGQUIT);
        let mut status = 0;
        libc::waitpid(pid as libc::pid_t, &mut status, 0);
    }
    let _ = std::fs::remove_dir_all(root);
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_database_url_keeps_the_cluster_and_its_parameters() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5544/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5544/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/admin?sslmode=disable", "t2"),
            "postgres://u:p@h:1/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:1", "t3"),
            "postgres://u@h:1/t3"
        );
    }
}

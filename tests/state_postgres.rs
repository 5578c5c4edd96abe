//! `[state] url`: the operator commands, `bridge config check` and a dry run
//! against a real PostgreSQL (issue 18). The URL given to the bridge holds a
//! password (the test cluster trusts loopback, so it is never asked for):
//! no output may show it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bridge_demo::scenario::Simulators;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_testkit::cli::{output_off_runtime, text};
use bridge_testkit::postgres::TestDatabase;

const CANARY: &str = "CANARY-pw-7731";
const URL_VAR: &str = "BRIDGE_TEST_STATE_URL";
const TODAY: &str = "2025-06-01";

/// The test database's URL with a password in it.
fn with_password(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('@') {
        Some(at) if !url[start..start + at].contains(':') => {
            format!("{}:{CANARY}{}", &url[..start + at], &url[start + at..])
        }
        _ => url.to_string(),
    }
}

/// The simulators' config with its state in PostgreSQL (the URL from a
/// secret reference, as a deployment gives it).
fn pg_config(sims: &Simulators, project: &ProjectDirs, dir: &Path) -> PathBuf {
    let text = sims
        .config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab"))
        .replace(
            "[state]\npath = \"state.db\"",
            &format!("[state]\nurl = {{ env = \"{URL_VAR}\" }}"),
        );
    assert!(
        text.contains(URL_VAR),
        "the simulators' config changed shape"
    );
    let file = dir.join("bridge.toml");
    std::fs::write(&file, text).unwrap();
    file
}

async fn bridge(sims: &Simulators, db: &TestDatabase, config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .envs(sims.secret_env())
        .env(URL_VAR, with_password(db.url()))
        .env("BRIDGE_LOG", "warn");
    let out = output_off_runtime(cmd).await;
    let all = text(&out);
    assert!(!all.contains(CANARY), "the URL's password shown: {all}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_work_on_postgresql_and_backup_points_to_pg_dump() {
    let Some(db) = bridge_testkit::postgres::database().await else {
        return;
    };
    let project = ProjectDirs::locate().expect("project folder");
    // `config check` looks for the built jobs.
    project.build_jobs(&[]).expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = pg_config(&sims, &project, tmp.path());

    // No tables yet: refused, pointing to --init.
    let out = bridge(&sims, &db, &config, &["cursor", "show"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--init") && err.contains("state.url"), "{err}");
    assert!(err.contains("postgres://"), "names the database: {err}");

    let out = bridge(
        &sims,
        &db,
        &config,
        &[
            "cursor",
            "set",
            "ping-1.2",
            "2025-05-01T00:00:00Z",
            "--init",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = bridge(&sims, &db, &config, &["cursor", "show", "ping-1.2"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2025-05-01T00:00:00"),
        "{}",
        text(&out)
    );
    for args in [
        &["runs"][..],
        &["dead-letter", "list"],
        &["audit", "verify"],
        &["alerts"],
    ] {
        let out = bridge(&sims, &db, &config, args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }

    let backup = tmp.path().join("backup.db");
    let out = bridge(
        &sims,
        &db,
        &config,
        &["state", "backup", backup.to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg_dump") && err.contains("state.url"),
        "{err}"
    );
    assert!(!backup.exists());

    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["config", "check"])
        .arg(&config)
        .envs(sims.secret_env())
        .env(URL_VAR, with_password(db.url()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(CANARY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_refuses_a_password_written_in_the_file_naming_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bridge.toml");
    std::fs::write(
        &file,
        format!(
            "[state]\nurl = \"postgres://bridge:{CANARY}@db.example/bridge\"\n\n[primero]\n\
             base_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = {{ env = \"BRIDGE_TEST_UNSET\" }}\n\n\
             [jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(!all.contains(CANARY), "{all}");
    assert!(
        all.contains(&format!("{}:2: key `state.url`", file.display())),
        "{all}"
    );
    // Every command refuses it before connecting anywhere.
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["runs", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!text(&out).contains(CANARY), "{}", text(&out));
    assert!(text(&out).contains("key `state.url`"), "{}", text(&out));
}

/// A dry run on a PostgreSQL deployment reads its state (the cursor a live
/// run left) and reports what it would write; the database is unchanged to
/// the last row, and the live run after it delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reads_postgresql_and_changes_nothing_there() {
    let Some(db) = bridge_testkit::postgres::database().await else {
        return;
    };
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[]).expect("jobs build");
    let sims = Simulators::start_loopback().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = pg_config(&sims, &project, tmp.path());
    let run = |extra: &'static [&'static str]| {
        let mut args = vec![
            "flow", "run", "ping-1.1", "--init", "--today", TODAY, "--json",
        ];
        args.extend_from_slice(extra);
        args
    };
    let out = bridge(&sims, &db, &config, &run(&[])).await;
    assert!(out.status.success(), "{}", text(&out));

    let mut gen = bridge_sim::people::PeopleGenerator::new(404);
    let iv = bridge_sim::ping::SimIntervention::for_person(gen.person(), 9);
    let pending = sims.ping_sim().add_intervention(iv);
    let before = db.table_texts().await;
    assert!(
        before
            .iter()
            .any(|(t, rows)| t.ends_with(".writer") && rows.len() == 1),
        "{before:?}"
    );
    let out = bridge(&sims, &db, &config, &run(&["--dry-run"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true, "{report:#}");
    let record = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_id"] == pending.as_str())
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(record["outcome"]["outcome"], "would-write", "{report:#}");
    assert_eq!(
        db.table_texts().await,
        before,
        "the dry run changed the database"
    );
    assert!(sims
        .ping_sim()
        .pending_intervention_ids()
        .contains(&pending));

    let out = bridge(&sims, &db, &config, &run(&[])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(sims.ping_sim().pending_intervention_ids().is_empty());
    assert_ne!(db.table_texts().await, before);
}

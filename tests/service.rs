//! `bridge run` and the operator commands, as an operator uses them: the
//! real binary, the simulators on loopback, a config file in a temp folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bridge_demo::scenario::{seed_workflow_1_1, Simulators};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_testkit::cli::{sigterm, text, Streams};
use serde_json::Value;

const JOB: &str = "ping-1.1";

fn project() -> ProjectDirs {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[JOB.to_string()]).expect("jobs build");
    project
}

fn bridge(args: &[&str], env: &[(&str, String)], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("BRIDGE_LOG", "info")
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// A config without partners to reach: enough for the commands that only
/// read the file or the state database.
fn offline_config(dir: &Path, extra: &str) -> PathBuf {
    let file = dir.join("bridge.toml");
    std::fs::write(
        &file,
        format!(
            "[state]\npath = \"state.db\"\n\n[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = {{ env = \"BRIDGE_TEST_PRIMERO_PASSWORD\" }}\n\n[jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\nallow_placeholders = true\n{extra}"
        ),
    )
    .unwrap();
    file
}

fn kill_and_report(child: &mut Child, streams: Streams, why: &str) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    let (stdout, stderr) = streams.finish();
    panic!("{why}\nstdout:\n{stdout}\nstderr:\n{stderr}");
}

/// Wait for the child to exit; None after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_run_delivers_on_schedule_never_duplicates_and_stops_on_sigterm() {
    let project = project();
    let sims = Simulators::start_loopback().await.unwrap();
    let seed = seed_workflow_1_1(&sims, 51);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[schedule]\n\"ping-1.1\" = \"* * * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            sims.config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab"))
        ),
    )
    .unwrap();
    let env = sims.secret_env();

    // The service's default log level: one line per run, warnings.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["run", "--init", "--config"])
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("BRIDGE_LOG")
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let streams = Streams::read(&mut child);

    // Started: the service prints where metrics are, then "bridge running".
    let mut metrics_url = None;
    let started = tokio::task::block_in_place(|| loop {
        match streams.lines.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line.starts_with("bridge running") => break true,
            Ok(line) => {
                if let Some(url) = line.strip_prefix("metrics listening on ") {
                    metrics_url = Some(url.to_string());
                }
            }
            Err(_) => break false,
        }
    });
    if !started {
        kill_and_report(&mut child, streams, "bridge run did not start");
    }
    let Some(metrics_url) = metrics_url else {
        kill_and_report(&mut child, streams, "no metrics address printed");
    };
    let ready_url = metrics_url.replace("/metrics", "/readyz");
    let ready = reqwest::get(&ready_url).await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "{}",
        ready.text().await.unwrap()
    );

    // The scheduled runs create the three new cases.
    let primero = sims.primero_sim();
    let want = seed.cases_before + seed.first_run.created;
    let mut created = false;
    for _ in 0..1200 {
        if primero.case_count() >= want {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !created {
        kill_and_report(&mut child, streams, "no cases were created");
    }
    // Let a few more scheduled runs happen: they must not write again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("bridge_dead_letter_size"), "{metrics}");
    // The gauges an operator alerts on, set by the runs.
    // Held now, after many runs that each saw the same held record(s): a
    // gauge, not a count that grows per run.
    let held_now = format!(
        "bridge_records_held{{flow=\"ping-1.1\"}} {}\n",
        seed.first_run.held
    );
    assert!(
        seed.first_run.held > 0 && metrics.contains(&held_now),
        "{held_now}{metrics}"
    );
    for family in [
        "bridge_last_delivered_timestamp_seconds{flow=\"ping-1.1\"} 1",
        "bridge_last_success_timestamp_seconds{flow=\"ping-1.1\"} 1",
    ] {
        assert!(
            metrics.contains(family),
            "{family} (a Unix time):\n{metrics}"
        );
    }
    // The shipped alert rules and dashboard use only metrics it exports.
    crate::monitoring::check_against(&metrics);
    // The version each job serves: its component hash.
    let job_hash = bridge_runtime::content_hash(
        &std::fs::read(project.jobs_dist().join(format!("{JOB}.wasm"))).unwrap(),
    );
    assert!(
        metrics.contains(&format!("job=\"{JOB}\""))
            && metrics.contains(&format!("hash=\"{job_hash}\"")),
        "bridge_job_info names {JOB} and its hash: {metrics}"
    );

    sigterm(pid);
    let status = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(60)));
    let Some(status) = status else {
        kill_and_report(&mut child, streams, "bridge run did not stop on SIGTERM");
    };
    let (stdout, stderr) = streams.finish();
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("bridge stopped"), "{stdout}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("job serving") && l.contains(JOB) && l.contains(&job_hash)),
        "a startup line names each job, its version and hash:\n{stderr}"
    );
    // One line per run, with its counts and duration; no per-record lines.
    let run_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("run finished"))
        .collect();
    assert!(
        !run_lines.is_empty()
            && run_lines.iter().all(|l| l.contains("flow=ping-1.1")
                && l.contains("fetched=")
                && l.contains("delivered=")
                && l.contains("duration_ms=")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("record delivered"),
        "per-record lines at the default level:\n{stderr}"
    );
    assert_eq!(
        primero.case_count(),
        want,
        "repeated runs must not create cases twice"
    );
    // No personal data or credential in anything the service printed.
    let output = format!("{stdout}\n{stderr}");
    for person in &seed.people {
        for secret in [
            &person.given_name,
            &person.family_name,
            &person.date_of_birth,
            &person.phone,
        ] {
            assert!(
                !output.contains(secret.as_str()),
                "personal data in the output"
            );
        }
    }
    for (_, value) in &env {
        assert!(
            !output.contains(value.as_str()),
            "a credential in the output"
        );
    }

    // The runs are listed, newest first, all of ping-1.1 on the schedule.
    let config_arg = config.display().to_string();
    let out = tokio::task::block_in_place(|| {
        bridge(
            &["runs", "--config", &config_arg, "--json"],
            &[],
            tmp.path(),
        )
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert!(runs.len() >= 2, "several scheduled runs: {runs:#?}");
    for run in runs {
        assert_eq!(run["flow"], "ping-1.1");
        assert!(
            run["trigger"] == "schedule" || run["trigger"] == "startup",
            "{run}"
        );
        assert_ne!(run["outcome"], "running", "{run}");
    }
    assert!(
        runs.iter()
            .any(|r| r["delivered"].as_i64().unwrap_or(0) > 0),
        "one run delivered the new referrals: {runs:#?}"
    );

    // One run in detail.
    let id = runs.last().unwrap()["id"].as_str().unwrap().to_string();
    let out = tokio::task::block_in_place(|| {
        bridge(
            &["runs", "show", &id, "--config", &config_arg],
            &[],
            tmp.path(),
        )
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&id) && shown.contains("ping-1.1"), "{shown}");
    // The versions the run used: the job's component hash, the mappings' hash.
    assert!(
        shown.contains(&format!("job      sha256 {job_hash}")),
        "{shown}"
    );
    let mappings_line = shown
        .lines()
        .find(|l| l.starts_with("mappings "))
        .unwrap_or_default();
    assert!(
        bridge_runtime::approvals::is_sha256_hex(
            mappings_line.trim_start_matches("mappings ").trim()
        ),
        "{shown}"
    );

    let out = tokio::task::block_in_place(|| {
        bridge(
            &["runs", "show", "no-such-run", "--config", &config_arg],
            &[],
            tmp.path(),
        )
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn bridge_run_refuses_an_inbox_without_a_seal_key() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("BRIDGE_TEST_PRIMERO_PASSWORD", "pw".to_string()),
        (
            "BRIDGE_TEST_INBOX_API_KEY",
            "0123456789abcdef-api-key".to_string(),
        ),
        ("BRIDGE_TEST_BAD_SEAL", "not-hex-at-all-s3cr3t".to_string()),
    ];

    // Named, but the variable is not set.
    let config = offline_config(
        tmp.path(),
        "\n[inbox]\nlisten = \"127.0.0.1:0\"\napi_key = { env = \"BRIDGE_TEST_INBOX_API_KEY\" }\nseal_key = { env = \"BRIDGE_TEST_SEAL_KEY_UNSET\" }\n",
    );
    let out = bridge(
        &["run", "--config", &config.display().to_string()],
        &env,
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("inbox.seal_key") && all.contains("BRIDGE_TEST_SEAL_KEY_UNSET"),
        "{all}"
    );
    assert!(!tmp.path().join("state.db").exists(), "nothing was started");

    // Not there at all.
    let config = offline_config(
        tmp.path(),
        "\n[inbox]\napi_key = { env = \"BRIDGE_TEST_INBOX_API_KEY\" }\n",
    );
    let out = bridge(
        &["run", "--config", &config.display().to_string()],
        &env,
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("seal_key"), "{all}");

    // Not a key: named, and its value never shown.
    let config = offline_config(
        tmp.path(),
        "\n[inbox]\napi_key = { env = \"BRIDGE_TEST_INBOX_API_KEY\" }\nseal_key = { env = \"BRIDGE_TEST_BAD_SEAL\" }\n",
    );
    let out = bridge(
        &["run", "--config", &config.display().to_string()],
        &env,
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("inbox.seal_key") && all.contains("64 hex"),
        "{all}"
    );
    assert!(!all.contains("s3cr3t"), "{all}");

    // An unknown scheduled flow stops `bridge run` before anything starts.
    let config = offline_config(tmp.path(), "\n[schedule]\n\"ping-9.9\" = \"0 * * * * *\"\n");
    let out = bridge(
        &["run", "--config", &config.display().to_string()],
        &env,
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("schedule.\"ping-9.9\"") && all.contains(":15:"),
        "{all}"
    );
}

fn good_config(dir: &Path, project: &ProjectDirs, schedule: &str) -> PathBuf {
    let file = dir.join("bridge.toml");
    std::fs::write(
        &file,
        format!(
            r#"[state]
path = "state.db"

[primero]
base_url = "http://127.0.0.1:1"
auth = "basic"
user_name = "bridge"
password = {{ env = "BRIDGE_TEST_PRIMERO_PASSWORD" }}

[ping]
base_url = "http://127.0.0.1:2"
token_url = "http://127.0.0.1:2/token"
username = "bridge"
password = {{ env = "BRIDGE_TEST_PING_PASSWORD" }}
client_id = "client"
subscription_key = {{ env = "BRIDGE_TEST_PING_SUBSCRIPTION_KEY" }}

[jobs]
dir = "{jobs}"
mappings = "{mappings}"
allow_placeholders = true

[schedule]
{schedule}
"#,
            jobs = project.jobs_dist().display(),
            mappings = project.mappings("kenya-dadaab").display(),
        ),
    )
    .unwrap();
    file
}

#[test]
fn config_check_names_every_problem_and_passes_a_good_config() {
    let project = project();
    project
        .build_jobs(&["ping-2.1".to_string()])
        .expect("jobs build");
    let tmp = tempfile::tempdir().unwrap();
    let secret = "pw-VALUE-never-printed-4711";
    let env = [
        ("BRIDGE_TEST_PRIMERO_PASSWORD", secret.to_string()),
        ("BRIDGE_TEST_PING_PASSWORD", secret.to_string()),
        ("BRIDGE_TEST_PING_SUBSCRIPTION_KEY", secret.to_string()),
    ];

    // Good.
    let file = good_config(
        tmp.path(),
        &project,
        "\"ping-1.1\" = \"0 */5 * * * *\"\n\"ping-2.1\" = \"0 */10 * * * *\"",
    );
    let file_arg = file.display().to_string();
    let out = bridge(&["config", "check", &file_arg], &env, tmp.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("config OK") && all.contains("ping-1.1, ping-2.1"),
        "{all}"
    );
    assert!(!all.contains(secret), "{all}");
    assert!(
        !tmp.path().join("state.db").exists(),
        "check starts nothing"
    );

    // An unknown key: file, line, key.
    let text_of_good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text_of_good.replace(
            "client_id = \"client\"",
            "client_id = \"client\"\nclientid = \"x\"",
        ),
    )
    .unwrap();
    let out = bridge(&["config", "check", &file_arg], &env, tmp.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("line 16") && all.contains("clientid"), "{all}");
    assert!(all.contains("bridge.toml"), "{all}");

    // Many problems at once, each named.
    let file = good_config(
        tmp.path(),
        &project,
        "\"ping-1.1\" = \"every 5 minutes\"\n\"ping-9.9\" = \"0 * * * * *\"\n\"dtp-2.1\" = \"0 * * * * *\"",
    );
    let bad_jobs = std::fs::read_to_string(&file).unwrap().replace(
        &project.jobs_dist().display().to_string(),
        "no-such-jobs-folder",
    );
    std::fs::write(&file, bad_jobs).unwrap();
    let env_missing = [
        ("BRIDGE_TEST_PRIMERO_PASSWORD", secret.to_string()),
        ("BRIDGE_TEST_PING_SUBSCRIPTION_KEY", secret.to_string()),
    ];
    let out = bridge(&["config", "check", &file_arg], &env_missing, tmp.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for needle in [
        // Missing environment variable: the key and the variable.
        "ping.password",
        "BRIDGE_TEST_PING_PASSWORD",
        // Invalid cron, with its line.
        "schedule.\"ping-1.1\"",
        "not a cron expression",
        // Unknown flow.
        "schedule.\"ping-9.9\"",
        "unknown flow",
        // A flow of the other design.
        "schedule.\"dtp-2.1\"",
        "other design",
        // The job folder.
        "jobs.dir",
        "no-such-jobs-folder",
    ] {
        assert!(all.contains(needle), "`{needle}` missing:\n{all}");
    }
    assert!(all.contains(":24:"), "line of the bad cron:\n{all}");
    assert!(!all.contains(secret), "a secret was printed:\n{all}");
}

#[test]
fn cursor_set_and_show_round_trip_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let config = offline_config(tmp.path(), "");
    // The deployment's design comes from its mapping folder.
    std::os::unix::fs::symlink(
        ProjectDirs::locate().unwrap().mappings("kenya-dadaab"),
        tmp.path().join("mappings"),
    )
    .unwrap();
    let c = config.display().to_string();

    // Nothing stored yet.
    let out = bridge(&["cursor", "show", "--config", &c], &[], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("state.path"), "{}", text(&out));

    let out = bridge(
        &[
            "cursor",
            "set",
            "--init",
            "ping-2.1",
            "2025-06-01T10:00:00+02:00",
            "--config",
            &c,
        ],
        &[],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("ping-2.1") && said.contains("(none) -> 2025-06-01T08:00:00.000Z"),
        "{said}"
    );

    let out = bridge(
        &["cursor", "show", "ping-2.1", "--config", &c],
        &[],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2025-06-01T08:00:00.000Z"),
        "{}",
        text(&out)
    );

    let out = bridge(
        &[
            "cursor",
            "set",
            "ping-2.1",
            "2025-06-02T00:00:00Z",
            "--config",
            &c,
        ],
        &[],
        tmp.path(),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("2025-06-01T08:00:00.000Z -> 2025-06-02T00:00:00.000Z"),
        "{}",
        text(&out)
    );

    // Every flow is listed; the others have none.
    let out = bridge(&["cursor", "show", "--config", &c], &[], tmp.path());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("2025-06-02T00:00:00.000Z"), "{shown}");
    assert!(
        shown.contains("ping-1.2") && shown.contains("(none)"),
        "{shown}"
    );

    // Refused: not a timestamp, not a flow. The cursor stays.
    let out = bridge(
        &["cursor", "set", "ping-2.1", "yesterday", "--config", &c],
        &[],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("RFC 3339"), "{}", text(&out));
    let out = bridge(
        &[
            "cursor",
            "set",
            "ping-9.9",
            "2025-06-01T00:00:00Z",
            "--config",
            &c,
        ],
        &[],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unknown flow `ping-9.9`"),
        "{}",
        text(&out)
    );
    // Refused: a flow without a cursor, a flow of the other design.
    for (flow, why) in [
        ("ping-1.1", "has no cursor"),
        ("dtp-2.1", "belongs to the dtp design"),
    ] {
        let out = bridge(
            &[
                "cursor",
                "set",
                flow,
                "2025-06-01T00:00:00Z",
                "--config",
                &c,
            ],
            &[],
            tmp.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(why), "{flow}: {}", text(&out));
    }
    let out = bridge(&["cursor", "show", "--config", &c], &[], tmp.path());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown
            .lines()
            .filter(|l| l.starts_with("ping-1.1") || l.starts_with("dtp-2.1"))
            .all(|l| l.contains("(none)")),
        "{shown}"
    );
    let out = bridge(
        &["cursor", "show", "ping-2.1", "--config", &c],
        &[],
        tmp.path(),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2025-06-02T00:00:00.000Z"),
        "{}",
        text(&out)
    );

    // The other read-only commands work on the same database.
    let out = bridge(&["runs", "--config", &c], &[], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no runs"));
    let out = bridge(
        &["dead-letter", "list", "--config", &c, "--json"],
        &[],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn sim_writes_a_config_with_paths_relative_to_its_folder_that_checks() {
    let project = project();
    // A folder inside the clone (the usual place) and one outside it.
    let inside = tempfile::Builder::new()
        .prefix("sim-config-")
        .tempdir_in(&project.root)
        .unwrap();
    let outside = tempfile::tempdir().unwrap();
    for (folder, relative) in [(inside.path(), true), (outside.path(), false)] {
        let file = folder.join("bridge.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(["sim", "--primero-port", "0", "--ping-port", "0"])
            .arg("--write-config")
            .arg(&file)
            .current_dir(folder)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let streams = Streams::read(&mut child);
        let mut env: Vec<(String, String)> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = streams.lines.recv_timeout(left) else {
                kill_and_report(&mut child, streams, "the simulators did not start");
            };
            if let Some((k, v)) = line
                .trim()
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
            {
                env.push((k.to_string(), v.to_string()));
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        let written = std::fs::read_to_string(&file).unwrap();
        let jobs_line = written.lines().find(|l| l.starts_with("dir = ")).unwrap();
        let mappings_line = written
            .lines()
            .find(|l| l.starts_with("mappings = "))
            .unwrap();
        if relative {
            assert_eq!(jobs_line, "dir = \"../jobs/dist\"", "{written}");
            assert_eq!(
                mappings_line, "mappings = \"../mappings/kenya-dadaab\"",
                "{written}"
            );
        }
        // Either way the path, read against the config's folder, is the clone's.
        let written_jobs = jobs_line
            .trim_start_matches("dir = \"")
            .trim_end_matches('"');
        assert_eq!(
            folder.join(written_jobs).canonicalize().unwrap(),
            project.jobs_dist().canonicalize().unwrap(),
            "{written}"
        );
        // Checked from another working folder: paths resolve against the file's.
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let out = bridge(
            &["config", "check", &file.display().to_string()],
            &env,
            &std::env::temp_dir(),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(out.status.code(), Some(0), "{}\n{written}", text(&out));
    }
}

#[test]
fn config_check_runs_each_jobs_configure_and_finds_missing_components() {
    let project = project();
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        (
            "BRIDGE_TEST_PRIMERO_PASSWORD",
            "pw-primero-0123456789".to_string(),
        ),
        (
            "BRIDGE_TEST_PING_PASSWORD",
            "pw-ping-0123456789".to_string(),
        ),
        (
            "BRIDGE_TEST_PING_SUBSCRIPTION_KEY",
            "sub-key-0123456789".to_string(),
        ),
    ];
    // The country folder without `module_id`: the WF 1.1 job's configure
    // refuses it, which `bridge run` found only at start.
    let folder = tmp.path().join("country");
    std::fs::create_dir(&folder).unwrap();
    for entry in std::fs::read_dir(project.mappings("kenya-dadaab")).unwrap() {
        let entry = entry.unwrap();
        let mut text = std::fs::read_to_string(entry.path()).unwrap();
        if entry.file_name() == "deployment.toml" {
            text = text
                .lines()
                .filter(|l| !l.starts_with("module_id"))
                .collect::<Vec<_>>()
                .join("\n");
        }
        std::fs::write(folder.join(entry.file_name()), text).unwrap();
    }
    let file = good_config(tmp.path(), &project, "\"ping-1.1\" = \"0 */5 * * * *\"");
    let with_folder = std::fs::read_to_string(&file).unwrap().replace(
        &project.mappings("kenya-dadaab").display().to_string(),
        &folder.display().to_string(),
    );
    std::fs::write(&file, with_folder).unwrap();
    let out = bridge(
        &["config", "check", &file.display().to_string()],
        &env,
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("module_id") && all.contains("ping-1.1"),
        "{all}"
    );
    // `mappings check` runs each job's configure on the folder too.
    let out = bridge(
        &[
            "mappings",
            "check",
            &folder.display().to_string(),
            "--allow-placeholders",
        ],
        &[],
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("job ping-1.1 refuses the folder") && all.contains("module_id"),
        "{all}"
    );

    // A scheduled flow whose component is not built.
    let jobs = tmp.path().join("dist");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::copy(project.job_wasm("ping-1.1"), jobs.join("ping-1.1.wasm")).unwrap();
    let file = good_config(
        tmp.path(),
        &project,
        "\"ping-1.1\" = \"0 */5 * * * *\"\n\"ping-2.1\" = \"0 */5 * * * *\"",
    );
    let only_one = std::fs::read_to_string(&file).unwrap().replace(
        &project.jobs_dist().display().to_string(),
        &jobs.display().to_string(),
    );
    std::fs::write(&file, only_one).unwrap();
    let out = bridge(
        &["config", "check", &file.display().to_string()],
        &env,
        tmp.path(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("schedule.\"ping-2.1\"") && all.contains("no job component"),
        "{all}"
    );
    assert!(!all.contains("schedule.\"ping-1.1\""), "{all}");
}

#[test]
fn jobs_build_builds_only_the_named_jobs_and_refuses_an_unknown_name() {
    let project = project();
    let out = bridge(&["jobs", "build", "ping-1.1"], &[], &project.root);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let built: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(built.len(), 1, "{all}");
    assert!(built[0].ends_with("ping-1.1.wasm"), "{all}");
    // The build script was asked for that job alone.
    assert!(!all.contains("ping-2.1"), "{all}");

    let out = bridge(
        &["jobs", "build", "ping-1.1", "ping-9.9"],
        &[],
        &project.root,
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("no job named `ping-9.9`") && all.contains("ping-2.1"),
        "{all}"
    );
}

#[test]
fn state_backup_copies_a_private_consistent_database_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let config = offline_config(tmp.path(), "");
    std::os::unix::fs::symlink(
        ProjectDirs::locate().unwrap().mappings("kenya-dadaab"),
        tmp.path().join("mappings"),
    )
    .unwrap();
    let c = config.display().to_string();
    let out = bridge(
        &[
            "cursor",
            "set",
            "--init",
            "ping-2.1",
            "2025-06-01T00:00:00Z",
            "--config",
            &c,
        ],
        &[],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&tmp.path().join("state.db")),
        0o600,
        "state database mode"
    );

    let backup = tmp.path().join("backups/state-1.db");
    let backup_to = |file: &Path| {
        bridge(
            &[
                "state",
                "backup",
                &file.display().to_string(),
                "--config",
                &c,
            ],
            &[],
            tmp.path(),
        )
    };
    std::fs::create_dir(tmp.path().join("backups")).unwrap();
    let out = backup_to(&backup);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("integrity check ok"), "{}", text(&out));
    assert_eq!(mode(&backup), 0o600, "backup mode");

    // The copy is a complete state database: restored under the config, it
    // holds the cursor.
    let restored = tmp.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&backup, restored.join("state.db")).unwrap();
    std::fs::copy(&config, restored.join("bridge.toml")).unwrap();
    std::os::unix::fs::symlink(
        ProjectDirs::locate().unwrap().mappings("kenya-dadaab"),
        restored.join("mappings"),
    )
    .unwrap();
    let out = bridge(
        &[
            "cursor",
            "show",
            "ping-2.1",
            "--config",
            &restored.join("bridge.toml").display().to_string(),
        ],
        &[],
        &restored,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2025-06-01T00:00:00.000Z"),
        "{}",
        text(&out)
    );

    // Never over an existing file; a config without state is refused.
    let before = std::fs::read(&backup).unwrap();
    let out = backup_to(&backup);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("exists"), "{}", text(&out));
    assert_eq!(std::fs::read(&backup).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_which_partner_is_unreachable_and_recovers_when_it_answers() {
    let project = project();
    // Two loopback ports nothing listens on yet.
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (primero_addr, ping_addr) = (free(), free());
    // A config for simulators at those ports: written from a running pair,
    // its URLs moved to the closed ports.
    let model = Simulators::start_loopback().await.unwrap();
    let text = model
        .config_toml(&project.jobs_dist(), &project.mappings("kenya-dadaab"))
        .replace(&model.primero.base_url(), &format!("http://{primero_addr}"))
        .replace(
            model.ping.base_url().trim_end_matches('/'),
            &format!("http://{ping_addr}"),
        );
    assert!(text.contains(&ping_addr.to_string()), "{text}");
    let env = model.secret_env();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!("{text}\n[schedule]\n\"ping-1.1\" = \"* * * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[retry]\nbase_delay_ms = 10\nmax_delay_ms = 20\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["run", "--init", "--config"])
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let streams = Streams::read(&mut child);
    let metrics_url = tokio::task::block_in_place(|| {
        streams.wait_for("metrics listening on ", Duration::from_secs(180))
    });
    let Some(metrics_url) = metrics_url else {
        kill_and_report(&mut child, streams, "bridge run did not start");
    };
    let ready_url = metrics_url.replace("/metrics", "/readyz");
    let readyz = || async {
        let r = reqwest::get(&ready_url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    // Partners down: after a few runs, not ready, naming the partner and why.
    let mut seen = (0, String::new());
    for _ in 0..300 {
        seen = readyz().await;
        if seen.0 == 503 && seen.1.contains("unreachable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !(seen.0 == 503
        && seen.1.contains("partner ping unreachable")
        && seen.1.contains("connection refused"))
    {
        kill_and_report(
            &mut child,
            streams,
            &format!("readyz while PING is down: {seen:?}"),
        );
    }
    // /healthz stays liveness only.
    let health = reqwest::get(metrics_url.replace("/metrics", "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // The partners come up at those addresses: ready again.
    let _sims = Simulators::start(primero_addr, ping_addr).await.unwrap();
    for _ in 0..300 {
        seen = readyz().await;
        if seen.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen.0, 200, "readyz once the partners answer: {seen:?}");
}

#[test]
fn job_inspect_describes_a_component_from_the_cache_with_its_hash_and_limits() {
    let project = project();
    let wasm = project.job_wasm(JOB);
    let cache = tempfile::tempdir().unwrap();
    let inspect = || {
        Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(["--cache-dir", &cache.path().display().to_string()])
            .args(["job", "inspect", "--json"])
            .arg(&wasm)
            .output()
            .unwrap()
    };
    let first = inspect();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let second = inspect();
    let json: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(json["accepted"], true);
    assert_eq!(
        json["sha256"],
        bridge_runtime::content_hash(&std::fs::read(&wasm).unwrap())
    );
    assert_eq!(json["describe"]["name"], JOB);
    assert_eq!(json["describe"]["flow"], JOB);
    assert!(
        json["describe"]["tables"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{json}"
    );
    assert!(
        json["limits"]["memory_bytes"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert!(
        json["limits"]["call_timeout_ms"].as_u64().unwrap() > 0,
        "{json}"
    );
    // The second call loads from the precompile cache the first one filled.
    assert_eq!(json["from_cache"], true, "{json}");
}

//! Secrets: a unique canary value is given as every credential (environment
//! variables and secret files), the bridge is made to fail in every way that
//! prints config-related errors, and the canary must never appear in any
//! output, log (`--log trace`), error, `Debug` text or the state database.

use std::path::{Path, PathBuf};
use std::process::Command;

use bridge_demo::scenario::Simulators;
use bridge_mappings::MappingSet;
use bridge_partners::ping::PingClient;
use bridge_partners::primero::{CaseQuery, PrimeroClient};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_service::config::BridgeConfig;

use super::support::{contains_bytes, short};
use super::{Kind, Row};

const SECTION: &str = "secrets";
const COUNTRY: &str = "kenya-dadaab";

fn canary() -> String {
    format!("CANARY{}", uuid::Uuid::new_v4().simple())
}

/// One `bridge` command's outputs, with the canary in its environment.
struct Ran {
    code: i32,
    all: Vec<u8>,
}

fn bridge(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge"));
    cmd.args(args).arg("--log").arg("trace").current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bridge");
    let mut all = out.stdout;
    all.extend(out.stderr);
    Ran {
        code: out.status.code().unwrap_or(-1),
        all,
    }
}

fn row_for(case: impl Into<String>, ran: &Ran, canaries: &[&str], must_fail: bool) -> Row {
    let leaked = canaries.iter().any(|c| contains_bytes(&ran.all, c));
    let failed_as_wanted = !must_fail || ran.code != 0;
    let tail = String::from_utf8_lossy(&ran.all)
        .lines()
        .rev()
        .find(|l| l.starts_with("error") || l.contains(" ERROR ") || l.contains(" WARN "))
        .map(|l| short(l.trim(), 90))
        .unwrap_or_default();
    Row::new(
        SECTION,
        Kind::Secret,
        case,
        "canary absent from stdout, stderr and trace logs",
    )
    .observed(
        format!(
            "exit {}, {} bytes of output, canary {}{}",
            ran.code,
            ran.all.len(),
            if leaked { "FOUND" } else { "absent" },
            if tail.is_empty() {
                String::new()
            } else {
                format!("; last error: {tail}")
            }
        ),
        !leaked && failed_as_wanted,
    )
}

/// A dry run of a real job with the canary in its environment and in a file
/// in its working folder: the job sees neither (its output and logs show
/// no trace of it), and it still produces its outcome.
pub async fn job_canary_row(job: &Path, record: &Path, rows: &mut Vec<Row>) {
    let canary = canary();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("secret.txt"), &canary).unwrap();
    let project = ProjectDirs::locate().expect("project");
    // jobs/<job>/fixtures/<case>.record.json: the job's fixture settings.
    let job_dir = record.parent().and_then(Path::parent).unwrap();
    let settings = bridge_runtime::fixtures::FixtureSettings::of_job(job_dir).unwrap();
    let mappings = project.mappings(&settings.mappings);
    let ran = bridge(
        &[
            "job",
            "run",
            &job.display().to_string(),
            "--record",
            &record.display().to_string(),
            "--mappings",
            &mappings.display().to_string(),
            "--today",
            "2025-06-01",
        ],
        tmp.path(),
        &[
            ("BRIDGE_FAULT_MATRIX_CANARY", &canary),
            ("BRIDGE_PRIMERO_PASSWORD", &canary),
            ("HOME_SECRET", &canary),
        ],
    );
    let text = String::from_utf8_lossy(&ran.all);
    let ran_ok = ran.code == 0 && text.contains("\"outcome\"");
    let mut row = row_for(
        format!(
            "a real job ({}) run with the canary in its environment and working folder",
            job.file_stem().unwrap().to_string_lossy()
        ),
        &ran,
        &[&canary],
        false,
    );
    row.kind = Kind::HostileJob;
    row.expected = "the job runs; the canary is nowhere in its output or logs".into();
    row.pass &= ran_ok;
    if !ran_ok {
        row.observed = format!("{}; job did not run: {}", row.observed, short(&text, 160));
    }
    rows.push(row);
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn run() -> Vec<Row> {
    let mut rows = Vec::new();
    let canary = canary();
    let project = ProjectDirs::locate().expect("project");
    let sims = Simulators::start_loopback().await.expect("simulators");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let jobs = project.jobs_dist();
    let mappings = project.mappings(COUNTRY);
    let quick_retry = "\n[retry]\nmax_attempts = 1\n";

    // The simulators' real config, with the canary as every credential.
    let env_config = sims.config_toml(&jobs, &mappings) + quick_retry;
    let env_file = write_config(dir, "env.toml", &env_config);
    // The same, secrets from files.
    std::fs::write(dir.join("primero-password.txt"), format!("{canary}\n")).unwrap();
    std::fs::write(dir.join("ping-password.txt"), &canary).unwrap();
    std::fs::write(dir.join("ping-key.txt"), &canary).unwrap();
    let file_config = env_config
        .replace(
            "{ env = \"BRIDGE_PRIMERO_PASSWORD\" }",
            "{ file = \"primero-password.txt\" }",
        )
        .replace(
            "{ env = \"BRIDGE_PING_PASSWORD\" }",
            "{ file = \"ping-password.txt\" }",
        )
        .replace(
            "{ env = \"BRIDGE_PING_SUBSCRIPTION_KEY\" }",
            "{ file = \"ping-key.txt\" }",
        )
        .replace("state.db", "state-files.db");
    let file_file = write_config(dir, "files.toml", &file_config);
    // Partners that do not answer.
    let dead_config = env_config
        .replace(&sims.primero.base_url(), "http://127.0.0.1:1")
        .replace(&sims.ping.base_url(), "http://127.0.0.1:1")
        .replace("state.db", "state-dead.db");
    let dead_file = write_config(dir, "dead.toml", &dead_config);
    // A broken secret reference, next to a good one holding the canary.
    let broken_config = env_config.replace(
        "{ env = \"BRIDGE_PING_PASSWORD\" }",
        "{ env = \"BRIDGE_PING_PASSWORD\", file = \"ping-password.txt\" }",
    );
    let broken_file = write_config(dir, "broken.toml", &broken_config);
    // The inbox's API key and seal key (a second canary: a valid hex key).
    let seal_canary = bridge_store::Sealer::generate_key_hex();
    let inbox_section = "\n[inbox]\nlisten = \"127.0.0.1:0\"\napi_key = { env = \"BRIDGE_FM_INBOX_API_KEY\" }\nseal_key = { env = \"BRIDGE_FM_INBOX_SEAL_KEY\" }\n";
    let inbox_file = write_config(
        dir,
        "inbox.toml",
        &format!(
            "{}{inbox_section}",
            env_config.replace("state.db", "state-inbox.db")
        ),
    );
    // A seal key that is not a key: the error must not quote it.
    let bad_seal_file = write_config(
        dir,
        "bad-seal.toml",
        &format!(
            "{}{}",
            env_config.replace("state.db", "state-inbox.db"),
            inbox_section.replace("BRIDGE_FM_INBOX_SEAL_KEY", "BRIDGE_FM_INBOX_BAD_SEAL_KEY")
        ),
    );

    let env: Vec<(&str, &str)> = vec![
        ("BRIDGE_PRIMERO_PASSWORD", &canary),
        ("BRIDGE_PING_PASSWORD", &canary),
        ("BRIDGE_PING_SUBSCRIPTION_KEY", &canary),
        ("BRIDGE_FM_INBOX_API_KEY", &canary),
        ("BRIDGE_FM_INBOX_SEAL_KEY", &seal_canary),
        ("BRIDGE_FM_INBOX_BAD_SEAL_KEY", &canary),
    ];
    let p = |f: &Path| f.display().to_string();
    let commands: Vec<(String, Vec<String>, bool)> = vec![
        (
            "`bridge config check` (secrets from env)".into(),
            vec!["config".into(), "check".into(), p(&env_file)],
            false,
        ),
        (
            "`bridge config check` with an [inbox] (API key, seal key)".into(),
            vec!["config".into(), "check".into(), p(&inbox_file)],
            false,
        ),
        (
            "`bridge config check`: the seal key is not a key".into(),
            vec!["config".into(), "check".into(), p(&bad_seal_file)],
            true,
        ),
        (
            "`bridge flow run ping-1.1` with an [inbox] but no [dtp]: refused at start".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-1.1".into(),
                "--config".into(),
                p(&inbox_file),
            ],
            true,
        ),
        (
            "`bridge config check` (secrets from files)".into(),
            vec!["config".into(), "check".into(), p(&file_file)],
            false,
        ),
        (
            "`bridge config check` (a secret both env and file)".into(),
            vec!["config".into(), "check".into(), p(&broken_file)],
            true,
        ),
        (
            "`bridge flow run ping-1.1`: partners refuse the canary credentials".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-1.1".into(),
                "--config".into(),
                p(&env_file),
                "--today".into(),
                "2025-06-01".into(),
            ],
            true,
        ),
        (
            "`bridge flow run ping-2.1`: Primero refuses the canary password".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-2.1".into(),
                "--config".into(),
                p(&env_file),
                "--today".into(),
                "2025-06-01".into(),
            ],
            true,
        ),
        (
            "`bridge flow run ping-2.1` (secrets from files): refused".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-2.1".into(),
                "--config".into(),
                p(&file_file),
                "--json".into(),
            ],
            true,
        ),
        (
            "`bridge flow run ping-1.1`: partners unreachable".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-1.1".into(),
                "--config".into(),
                p(&dead_file),
            ],
            true,
        ),
        (
            "`bridge flow run ping-2.1`: partners unreachable".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-2.1".into(),
                "--config".into(),
                p(&dead_file),
            ],
            true,
        ),
        (
            "`bridge flow run` with a broken secret reference".into(),
            vec![
                "flow".into(),
                "run".into(),
                "--init".into(),
                "ping-1.1".into(),
                "--config".into(),
                p(&broken_file),
            ],
            true,
        ),
        (
            "`bridge mappings check`".into(),
            vec![
                "mappings".into(),
                "check".into(),
                "--allow-placeholders".into(),
                p(&mappings),
            ],
            false,
        ),
        (
            "`bridge runs` on the state the failed runs left".into(),
            vec!["runs".into(), "--config".into(), p(&env_file)],
            false,
        ),
        (
            "`bridge dead-letter list`".into(),
            vec![
                "dead-letter".into(),
                "list".into(),
                "--config".into(),
                p(&env_file),
            ],
            false,
        ),
    ];
    for (case, args, must_fail) in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = tokio::task::block_in_place(|| bridge(&args, dir, &env));
        rows.push(row_for(case, &ran, &[&canary, &seal_canary], must_fail));
    }
    // The state databases the runs wrote (errors, outcomes, attempts).
    let mut db = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".db") {
            db.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    let leaked = contains_bytes(&db, &canary) || contains_bytes(&db, &seal_canary);
    rows.push(
        Row::new(
            SECTION,
            Kind::Secret,
            "state databases after the failed runs",
            "canary absent",
        )
        .observed(
            format!(
                "{} bytes, canary {}",
                db.len(),
                if leaked { "FOUND" } else { "absent" }
            ),
            !leaked && !db.is_empty(),
        ),
    );

    // In-process: Debug and Display of configs, clients and errors.
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let mut texts: Vec<(&str, String)> = Vec::new();
    for (what, file) in [("env", &env_file), ("files", &file_file)] {
        let config = BridgeConfig::load(file).expect("config loads");
        let set = MappingSet::load_dir(&mappings).expect("mappings");
        texts.push(("BridgeConfig {:?}", format!("{what}: {config:?}")));
        match config.primero_client_config() {
            Ok(c) => {
                texts.push(("PrimeroConfig {:?}", format!("{c:?}")));
                match PrimeroClient::new(c) {
                    Ok(client) => {
                        texts.push(("PrimeroClient {:?}", format!("{client:?}")));
                        match client.list_cases(&CaseQuery::new()).await {
                            Ok(_) => texts.push((
                                "Primero call with the canary password",
                                "UNEXPECTEDLY ACCEPTED".into(),
                            )),
                            Err(e) => texts.push((
                                "Primero auth error {} and {:?}",
                                format!("{e} {e:?} {e:#}"),
                            )),
                        }
                    }
                    Err(e) => texts.push(("PrimeroClient::new error", format!("{e} {e:?}"))),
                }
            }
            Err(e) => texts.push(("primero_client_config error", format!("{e} {e:?}"))),
        }
        match config.ping_client_config(&set.deployment) {
            Ok(c) => {
                texts.push(("PingConfig {:?}", format!("{c:?}")));
                match PingClient::new(c) {
                    Ok(client) => {
                        texts.push(("PingClient {:?}", format!("{client:?}")));
                        match client.retrieve("SHP-2747", &[]).await {
                            Ok(_) => texts.push((
                                "PING call with the canary credentials",
                                "UNEXPECTEDLY ACCEPTED".into(),
                            )),
                            Err(e) => texts
                                .push(("PING auth error {} and {:?}", format!("{e} {e:?} {e:#}"))),
                        }
                    }
                    Err(e) => texts.push(("PingClient::new error", format!("{e} {e:?}"))),
                }
            }
            Err(e) => texts.push(("ping_client_config error", format!("{e} {e:?}"))),
        }
    }
    // A secret that cannot be read: the error names where, never the value.
    std::env::remove_var("BRIDGE_PING_PASSWORD");
    if let Ok(config) = BridgeConfig::load(&env_file) {
        let set = MappingSet::load_dir(&mappings).expect("mappings");
        if let Err(e) = config.ping_client_config(&set.deployment) {
            texts.push(("missing secret error", format!("{e} {e:?}")));
        }
    }
    std::env::set_var("BRIDGE_PING_PASSWORD", &canary);
    for (what, file) in [
        ("InboxSettings {:?}", &inbox_file),
        ("seal key error", &bad_seal_file),
    ] {
        match BridgeConfig::load(file).map(|c| c.inbox_settings()) {
            Ok(Ok(settings)) => texts.push((what, format!("{settings:?}"))),
            Ok(Err(e)) => texts.push((what, format!("{e} {e:?}"))),
            Err(e) => texts.push((what, format!("config did not load: {e}"))),
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    let count = |what: &str| texts.iter().filter(|(w, _)| *w == what).count() as u64;
    for (what, text) in &texts {
        let accepted = text.contains("UNEXPECTEDLY ACCEPTED");
        let leaked = text.contains(&canary) || text.contains(&seal_canary);
        if seen.contains(what) {
            // Same check for the second config: fold into one row.
            if leaked || accepted {
                rows.push(
                    Row::new(
                        SECTION,
                        Kind::Secret,
                        format!("{what} (secrets from files)"),
                        "canary absent",
                    )
                    .observed(short(text, 160), false),
                );
            }
            continue;
        }
        seen.push(what);
        rows.push(
            Row::new(
                SECTION,
                Kind::Secret,
                *what,
                if count(what) > 1 {
                    "canary absent (secrets from env and from files)"
                } else {
                    "canary absent"
                },
            )
            .observed(
                if leaked {
                    format!("FOUND: {}", short(text, 140))
                } else if accepted {
                    text.clone()
                } else {
                    format!("absent ({} chars)", text.len())
                },
                !leaked && !accepted,
            )
            .tried(count(what)),
        );
    }
    sims.primero.shutdown().await;
    sims.ping.shutdown().await;
    rows
}

//! `bridge sim --dtp-port`: the DTP design tried by hand. The simulators run
//! as their own process, as an operator starts them; the configuration they
//! write is checked and run with the real binary, and what moved is read
//! from the simulator's side (what DTP says it received), not from the
//! bridge's report.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::PeopleGenerator;
use bridge_testkit::cli::{text, Streams};
use bridge_testkit::personal::assert_absent;

/// The DTP design's jobs (the config loads every component in jobs/dist;
/// the other design's are skipped).
const JOBS: [&str; 4] = ["dtp-1.1", "dtp-1.2", "dtp-2.1", "dtp-2.3"];

fn bridge(args: &[&str], env: &[(String, String)], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BRIDGE_LOG", "info")
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stop(child: &mut Child, streams: Streams) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let (stdout, stderr) = streams.finish();
    format!("stdout:\n{stdout}\nstderr:\n{stderr}")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sim_with_dtp_writes_a_config_that_checks_and_moves_the_seeded_referrals() {
    let project = ProjectDirs::locate().unwrap();
    project
        .build_jobs(&JOBS.map(String::from))
        .expect("jobs build");
    // Inside the clone, as an operator would (the paths are then relative).
    let tmp = tempfile::Builder::new()
        .prefix("sim-dtp-")
        .tempdir_in(&project.root)
        .unwrap();
    let config = tmp.path().join("bridge.toml");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args([
            "sim",
            "--primero-port",
            "0",
            "--ping-port",
            "0",
            "--dtp-port",
            "0",
            "--inbox-port",
            "0",
            "--seed-demo",
            "--write-config",
        ])
        .arg(&config)
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let streams = Streams::read(&mut sim);
    let mut env: Vec<(String, String)> = Vec::new();
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = streams.lines.recv_timeout(left) else {
            let out = stop(&mut sim, streams);
            panic!("the simulators did not start\n{out}");
        };
        if let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|kv| kv.split_once('='))
        {
            env.push((k.to_string(), v.to_string()));
        }
        let done = line.starts_with("Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let written = std::fs::read_to_string(&config).unwrap();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "BRIDGE_PRIMERO_PASSWORD",
            "BRIDGE_DTP_SUBSCRIPTION_KEY",
            "BRIDGE_INBOX_API_KEY",
            "BRIDGE_INBOX_SEAL_KEY"
        ],
        "{printed:?}"
    );
    // The DTP design: its folder, [dtp] with the PKI files beside the
    // config, [inbox], relative paths; secrets only in the .env file.
    for line in [
        "mappings = \"../mappings/ethiopia-gambella\"",
        "dir = \"../jobs/dist\"",
        "client_cert = \"dtp-client.pem\"",
        "client_key = \"dtp-client.key\"",
        "extra_root = \"dtp-ca.pem\"",
        "[inbox]",
        "\"dtp-2.1\" = \"0 * * * * *\"",
    ] {
        assert!(written.lines().any(|l| l == line), "{line}:\n{written}");
    }
    assert!(!written.contains("[ping]"), "{written}");
    for (_, secret) in &env {
        assert!(!written.contains(secret.as_str()), "{written}");
    }
    assert_eq!(mode(&tmp.path().join("dtp-client.key")), 0o600);
    assert_eq!(mode(&tmp.path().join("bridge.env")), 0o600);
    let env_file = std::fs::read_to_string(tmp.path().join("bridge.env")).unwrap();
    for (k, v) in &env {
        assert!(env_file.contains(&format!("{k}={v}\n")));
    }

    // Checked from another folder: paths resolve against the file's.
    let out = bridge(
        &["config", "check", &config.display().to_string()],
        &env,
        &std::env::temp_dir(),
    );
    if out.status.code() != Some(0) {
        let sim_out = stop(&mut sim, streams);
        panic!("{}\n{written}\n{sim_out}", text(&out));
    }
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("design dtp"),
        "{}",
        text(&out)
    );

    // One run of each scheduled DTP flow, as `bridge run --once --init`.
    let run = bridge(
        &["run", "--once", "--init", "--config", "bridge.toml"],
        &env,
        tmp.path(),
    );
    // What DTP received, as the simulator reports it: the seeded Primero
    // referral (flow dtp-2.1) and the caseworker's decision (dtp-1.2).
    let want = [
        "DTP received ReceiveIncomingReferral: referral id ",
        "DTP received ReceiveDecisionOutgoingReferral: intervention 803-24-PRTITV-1001001 status acknowledged",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want
        .iter()
        .all(|w| printed.iter().any(|l| l.starts_with(w)))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match streams.lines.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => break,
        }
    }
    let sim_out = stop(&mut sim, streams);
    assert_eq!(run.status.code(), Some(0), "{}\n{sim_out}", text(&run));
    for w in want {
        assert!(
            printed.iter().any(|l| l.starts_with(w)),
            "DTP did not report `{w}`\n{}\n{sim_out}",
            text(&run)
        );
    }
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        report.contains("flow dtp-2.1") && report.contains("flow dtp-1.2"),
        "{report}"
    );
    // The pushed referral waits for the inbox, which `--once` does not serve.
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("DTP waits for the bridge's inbox at http://127.0.0.1:")),
        "{sim_out}"
    );

    // Ids and statuses only: none of the seeded people's personal data.
    let mut people = PeopleGenerator::new(1);
    let seeded: Vec<_> = (0..3).map(|_| people.person()).collect();
    let terms: Vec<&str> = seeded.iter().flat_map(|p| p.personal_data()).collect();
    assert_absent("bridge sim's output", &sim_out, terms.iter().copied());
    assert_absent("bridge run's output", &text(&run), terms.iter().copied());
}

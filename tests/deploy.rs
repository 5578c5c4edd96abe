//! deploy/: the systemd unit, the container build and the compose trial agree
//! with the code. No container runtime is reachable here, so the files are
//! checked against what they name: the commands and flags exist, the paths
//! they copy exist in the repository, and systemd accepts the unit.

use std::path::Path;
use std::process::Command;

use bridge_runtime::toolchain::ProjectDirs;

fn root() -> std::path::PathBuf {
    ProjectDirs::locate().expect("project folder").root
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `bridge <args> --help` succeeds and mentions every flag in `args`.
fn bridge_accepts(words: &[&str]) {
    let subcommand: Vec<&str> = words
        .iter()
        .copied()
        .take_while(|w| !w.starts_with('-'))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(&subcommand)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bridge {} --help failed",
        subcommand.join(" ")
    );
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(flag),
            "bridge {}: no flag {flag}\n{help}",
            subcommand.join(" ")
        );
    }
}

#[test]
fn the_systemd_unit_runs_an_existing_command_and_systemd_accepts_it() {
    let unit = read("deploy/systemd/referral-bridge.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/bridge "))
        .expect("ExecStart runs /usr/local/bin/bridge");
    bridge_accepts(&exec.split_whitespace().collect::<Vec<_>>());
    for hardening in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=referral-bridge",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "UMask=0077",
    ] {
        assert!(unit.contains(hardening), "unit lacks {hardening}");
    }
    // systemd's own check, on a copy pointing at the binary under test.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("referral-bridge.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/bridge", env!("CARGO_BIN_EXE_bridge")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs the `systemd` package)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn the_container_files_name_existing_paths_and_commands() {
    let root = root();
    let containerfile = read("deploy/container/Containerfile");
    for line in containerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            if *source == "." {
                continue;
            }
            assert!(
                root.join(source).exists(),
                "Containerfile copies {source}, not in the repository"
            );
        }
    }
    assert!(
        containerfile.contains("--no-default-features"),
        "the image runs the production build"
    );
    assert!(
        containerfile.contains("USER 10001"),
        "the image runs as a non-root user"
    );
    let cmd = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    bridge_accepts(&cmd.iter().map(String::as_str).collect::<Vec<_>>());
    // Every job folder is built in the jobs stage.
    assert!(containerfile.contains("node jobs/build.mjs"));

    let compose = read("deploy/container/compose.yaml");
    let command = compose
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("command:"))
        .take_while(|l| !l.trim_start().starts_with("volumes:"))
        .collect::<Vec<_>>()
        .join(" ");
    let list = &command[command.find('[').unwrap()..=command.rfind(']').unwrap()];
    let words: Vec<String> = serde_json::from_str(list).unwrap();
    bridge_accepts(&words.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(compose.contains("bridge run --init --config /trial/bridge.toml"));
    assert!(Path::new(&root.join("deploy/container/Containerfile")).exists());
}

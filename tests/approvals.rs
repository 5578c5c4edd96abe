//! `[jobs] require_approved`, as an operator and an auditor use it with the
//! real binary: an unapproved component is refused at start (the approvals
//! file and the hash named), an approved one starts, a hot swap to an
//! unapproved build is refused while the old version keeps serving, and
//! approving the new build (`bridge job approve`, which edits the file) lets
//! the next poll swap it in. The job is the tiny WAT test job (fast).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge_runtime::content_hash;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_testkit::cli::{sigterm, text, Streams};
use bridge_testkit::wat::test_job_wat;

fn component(version: u32) -> Vec<u8> {
    wat::parse_str(test_job_wat(version, "", &[])).expect("valid WAT")
}

fn bridge(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .env("BRIDGE_TEST_PRIMERO_PASSWORD", "pw")
        .env("BRIDGE_LOG", "info")
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Write `bytes` so that the modification time changes (hot reload looks at it).
fn write_changed(path: &Path, bytes: &[u8]) {
    let before = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
    loop {
        std::fs::write(path, bytes).unwrap();
        let after = std::fs::metadata(path).unwrap().modified().unwrap();
        if Some(after) != before {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hash `bridge_job_info` reports for test-job.
async fn serving_hash(metrics_url: &str) -> Option<String> {
    let text = reqwest::get(metrics_url).await.ok()?.text().await.ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("bridge_job_info{") && l.contains("job=\"test-job\""))?;
    let hash = line.split("hash=\"").nth(1)?.split('"').next()?;
    Some(hash.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_approved_components_start_and_swap_in() {
    let project = ProjectDirs::locate().expect("project folder");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("jobs")).unwrap();
    let job_file = dir.join("jobs/test-job.wasm");
    let (v1, v2) = (component(1), component(2));
    let (hash1, hash2) = (content_hash(&v1), content_hash(&v2));
    std::fs::write(&job_file, &v1).unwrap();
    std::fs::write(dir.join("approvals.toml"), "# nothing approved yet\n").unwrap();
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\npath = \"state.db\"\n\n[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = {{ env = \"BRIDGE_TEST_PRIMERO_PASSWORD\" }}\n\n[jobs]\ndir = \"jobs\"\nmappings = \"{}\"\nallow_placeholders = true\nreload_secs = 1\nrequire_approved = true\napprovals = \"approvals.toml\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            project.mappings("kenya-dadaab").display()
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();

    // 1. Not approved: refused at start, naming the file and the hash.
    let out =
        tokio::task::block_in_place(|| bridge(&["run", "--init", "--config", &config_arg], dir));
    let said = text(&out);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("approvals.toml") && said.contains(&hash1) && said.contains("not approved"),
        "the refusal names the approvals file and the hash:\n{said}"
    );

    // 2. The auditor approves it; the service starts on it.
    let approve = |file: &str| {
        let out = bridge(
            &[
                "job",
                "approve",
                file,
                "--by",
                "auditor-1",
                "--file",
                "approvals.toml",
            ],
            dir,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    tokio::task::block_in_place(|| approve("jobs/test-job.wasm"));
    let out = tokio::task::block_in_place(|| {
        bridge(
            &[
                "job",
                "inspect",
                "jobs/test-job.wasm",
                "--approvals",
                "approvals.toml",
            ],
            dir,
        )
    });
    assert!(
        text(&out).contains("approved: yes, by auditor-1"),
        "{}",
        text(&out)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["run", "--init", "--config", &config_arg])
        .env("BRIDGE_TEST_PRIMERO_PASSWORD", "pw")
        .env("BRIDGE_LOG", "info")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let streams = Streams::read(&mut child);
    let metrics_url = tokio::task::block_in_place(|| {
        streams.wait_for("metrics listening on ", Duration::from_secs(120))
    });
    let running =
        tokio::task::block_in_place(|| streams.wait_for("bridge running", Duration::from_secs(60)));
    let fail = |child: &mut std::process::Child, streams: Streams, why: &str| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        let (stdout, stderr) = streams.finish();
        panic!("{why}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    let (Some(metrics_url), Some(_)) = (metrics_url, running) else {
        fail(
            &mut child,
            streams,
            "bridge run did not start on the approved job",
        );
    };
    assert_eq!(
        serving_hash(&metrics_url).await.as_deref(),
        Some(hash1.as_str())
    );

    // 3. An unapproved build over the file: refused, version 1 keeps serving.
    write_changed(&job_file, &v2);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    if serving_hash(&metrics_url).await.as_deref() != Some(hash1.as_str()) {
        fail(&mut child, streams, "an unapproved version was swapped in");
    }

    // 4. Approving it (an edit of the approvals file) lets the next poll swap it in.
    tokio::task::block_in_place(|| approve("jobs/test-job.wasm"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving_hash(&metrics_url).await.as_deref() != Some(hash2.as_str()) {
        if Instant::now() > deadline {
            fail(
                &mut child,
                streams,
                "the approved version was not swapped in",
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    sigterm(pid);
    let _ = tokio::task::block_in_place(|| child.wait());
    let (_, stderr) = streams.finish();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("job serving") && l.contains(&hash1)),
        "the startup line names the job's hash:\n{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.contains("new job version refused")
            && l.contains(&hash2)
            && l.contains("approvals.toml")),
        "the refused swap names the hash and the approvals file:\n{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("job version swapped in") && l.contains(&hash2)),
        "{stderr}"
    );
}

//! `bridge bench --quick`: every part of the suite runs (job layer, OpenFn side
//! by side, end to end against the simulators, scaling, the state store on
//! SQLite and PostgreSQL, one and three replicas) and the report it
//! writes has its header, every section and a verdict for every target. No
//! figure is checked: timings are reported, never asserted.

use std::process::Command;

use bridge_runtime::toolchain::ProjectDirs;

#[test]
fn quick_bench_writes_every_section() {
    let project = ProjectDirs::locate().expect("project folder");
    project.build_jobs(&[]).expect("jobs build");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results.md");
    let output = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .current_dir(&project.root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bridge bench --quick failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let md = std::fs::read_to_string(&out).expect("the report was written");

    for heading in [
        "# Benchmark results",
        "## Targets",
        "## 1. Job layer",
        "## 2. Same mapping on the OpenFn runtime",
        "## 3. End to end",
        "## 4. Scaling",
        "## 5. State store: SQLite and PostgreSQL",
        "## 6. Replicas: one and three on PostgreSQL, and failover",
    ] {
        assert!(md.contains(heading), "no `{heading}` in:\n{md}");
    }
    for key in [
        "- date: ",
        "- cores (nproc): ",
        "- CPU: ",
        "- wasmtime: ",
        "- node: v",
        "- @openfn/runtime: ",
    ] {
        assert!(md.contains(key), "no `{key}` in the header:\n{md}");
    }
    assert!(!md.contains("Not run"), "a part did not run:\n{md}");

    // Every target got a verdict (met or not met), none is left unmeasured.
    let targets: Vec<&str> = md
        .split("## Targets")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| target") && !l.starts_with("| ---"))
        .collect();
    assert!(targets.len() >= 8, "too few targets:\n{md}");
    for t in &targets {
        // Without PostgreSQL the state store part reports why; accepted only
        // when the PostgreSQL tests were skipped on purpose.
        if t.contains("PostgreSQL not measured")
            && std::env::var(bridge_testkit::postgres::SWITCH_VAR).as_deref() == Ok("skip")
        {
            eprintln!("SKIPPED the state store's PostgreSQL figures: {t}");
            continue;
        }
        assert!(
            t.ends_with("| met |") || t.ends_with("| **not met** |"),
            "target without a verdict: {t}"
        );
    }

    // Both real jobs were measured in the job and OpenFn parts, and both
    // runtimes reached the same outcomes on the same records.
    for job in ["ping-1.1", "ping-2.1"] {
        assert!(
            md.matches(&format!("| {job} |")).count() >= 4,
            "{job} missing from the tables:\n{md}"
        );
    }
    assert!(!md.contains("Outcome counts differ"), "{md}");
    // The end-to-end runs delivered what was seeded.
    for flow in ["ping-1.1", "ping-2.1"] {
        assert!(
            md.contains(&format!("| {flow} |")),
            "{flow} not measured:\n{md}"
        );
    }
    assert!(!md.contains("| n/a |"), "a figure is missing:\n{md}");
    // The fresh process of section 2 delivered its referral (a refused run
    // would be timed as a fast one).
    assert!(
        md.contains("delivered and acknowledged: true"),
        "the one-referral run did not deliver:\n{md}"
    );
}

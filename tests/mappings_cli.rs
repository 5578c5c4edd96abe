//! `bridge mappings new` and `bridge mappings check` as a country team uses
//! them: the real binary on a copy of a shipped folder.

use std::path::Path;
use std::process::{Command, Output};

use bridge_runtime::toolchain::ProjectDirs;
use bridge_testkit::cli::text;

fn bridge(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// `bridge mappings check <dir>` without the jobs (this test is about the
/// folder's own data; the jobs' configure is tested in tests/service.rs).
fn check(dir: &Path, extra: &[&str], cwd: &Path) -> Output {
    let no_jobs = cwd.join("no-jobs");
    std::fs::create_dir_all(&no_jobs).unwrap();
    let mut args = vec![
        "mappings",
        "check",
        dir.to_str().unwrap(),
        "--jobs",
        no_jobs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bridge(&args, cwd)
}

/// `file:line: key `k`` of each `error:` line.
fn error_places(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .filter_map(|l| {
            let (place, rest) = l.split_once(": key `")?;
            let key = rest.split('`').next()?;
            Some(format!("{place} {key}"))
        })
        .collect()
}

#[test]
fn a_new_country_folder_is_refused_naming_every_mark_until_confirmed() {
    let project = ProjectDirs::locate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testland-camp");
    let from = project.mappings("ethiopia-gambella");
    let out = bridge(
        &[
            "mappings",
            "new",
            "testland-camp",
            "--from",
            from.to_str().unwrap(),
            "--to",
            dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The checklist: each marked value as `file:line  key  confirm with …`.
    let listed: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains("  confirm with "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let place = words.next().unwrap();
            let key = words.next().unwrap();
            format!("{place} {key}")
        })
        .collect();
    for key in [
        "deployment.module_id",
        "deployment.intake_user",
        "deployment.unhcr_user",
        "deployment.admin_email",
        "map.legal_support",
    ] {
        assert!(
            listed.iter().any(|l| l.ends_with(&format!(" {key}"))),
            "{key} not in the checklist:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("deployment.unhcr_user") && stdout.contains("the Primero administrators")
    );
    assert!(
        stdout.contains("inbound-sex.toml: 4 entries; partner codes on the left"),
        "{stdout}"
    );
    assert!(stdout.contains("sharing.toml with UNHCR"), "{stdout}");
    let deployment = std::fs::read_to_string(dir.join("deployment.toml")).unwrap();
    assert!(
        deployment.contains("country = \"testland-camp\""),
        "{deployment}"
    );

    // `mappings check` refuses it naming every mark, exactly the checklist's.
    let out = check(&dir, &[], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut refused = error_places(&String::from_utf8_lossy(&out.stderr));
    let mut listed = listed;
    refused.sort();
    listed.sort();
    assert_eq!(refused, listed, "{}", text(&out));
    // Allowed (simulators only), it passes.
    let out = check(&dir, &["--allow-placeholders"], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Never over an existing folder.
    let before = std::fs::read_to_string(dir.join("deployment.toml")).unwrap();
    let out = bridge(
        &[
            "mappings",
            "new",
            "other",
            "--from",
            from.to_str().unwrap(),
            "--to",
            dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("deployment.toml")).unwrap(),
        before
    );

    // Without --to, the folder is made next to --from's, named after the country.
    let shipped = tmp.path().join("mappings");
    std::fs::create_dir(&shipped).unwrap();
    let copy = shipped.join("kenya-dadaab");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(project.mappings("kenya-dadaab")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let out = bridge(
        &[
            "mappings",
            "new",
            "testland-north",
            "--from",
            "mappings/kenya-dadaab",
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(shipped.join("testland-north/deployment.toml").is_file());
}

#[test]
fn mappings_check_names_each_partner_code_outside_a_tables_declared_codes() {
    let project = ProjectDirs::locate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kenya");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(project.mappings("kenya-dadaab")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let edit = |table: &str, from: &str, to: &str| {
        let file = dir.join(format!("{table}.toml"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{table}: {from}");
        std::fs::write(&file, text.replace(from, to)).unwrap();
        let line = text.lines().position(|l| l == from).unwrap() + 1;
        format!("{}:{line}", file.display())
    };
    // Two typos of proGres codes, on either side of a table.
    let sex = edit(
        "inbound-sex",
        "\"125080002\" = \"other_b25f252\"",
        "\"125800002\" = \"other_b25f252\"",
    );
    let status = edit(
        "decision-transfer-status",
        "\"acknowledged\" = \"125080003\"",
        "\"acknowledged\" = \"12508003\"",
    );
    let out = check(&dir, &["--allow-placeholders"], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        error_places(&stderr),
        [
            format!("{status} map.acknowledged"),
            format!("{sex} map.125800002"),
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("`12508003` is not one of the table's `values`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`125800002` is not one of the table's `keys`"),
        "{stderr}"
    );
}

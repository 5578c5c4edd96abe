//! A country's variant of a job, end to end, as a job author makes it
//! (docs/job-author/variants.md): `bridge job new` in a copy of the project,
//! a different filter, its fixtures updated with `bridge job test --update`,
//! named in the country's `deployment.toml`, checked, then served by the real
//! `bridge flow run` against the simulators in place of the shared job (which
//! is built and in the same folder). Wrong names are refused with the file,
//! the line and the key; approvals cover the variant like any job.

use std::path::Path;
use std::process::{Command, Output};

use bridge_demo::scenario::{seed_workflow_1_1, Simulators};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_testkit::cli::{output_off_runtime, text};
use serde_json::Value;

const SHARED: &str = "ping-1.1";
const VARIANT: &str = "ping-1.1-kakuma";
const COUNTRY: &str = "kenya-kakuma";
/// The referral the variant filters out (the seed's third new referral is a BIA).
const BIA: &str = "BIA";
const SKIP: &str = "not-sent: best interest assessments go to the panel here";

/// A copy of the project a job author works in: `wit/`, `jobs/` (sources;
/// `node_modules` linked, nothing built), `mappings/kenya-dadaab` and
/// `mappings/kenya-kakuma`, a copy of it for the new country.
fn project_copy(project: &ProjectDirs, root: &Path) {
    fn copy(from: &Path, to: &Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                copy(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
    }
    copy(&project.root.join("wit"), &root.join("wit"));
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    for entry in std::fs::read_dir(project.jobs_src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "node_modules" {
            std::os::unix::fs::symlink(&path, root.join("jobs").join(&name)).unwrap();
        } else if name != "dist" && !name.starts_with('.') {
            copy(&path, &root.join("jobs").join(&name));
        }
    }
    std::fs::create_dir_all(root.join("mappings")).unwrap();
    copy(
        &project.mappings("kenya-dadaab"),
        &root.join("mappings/kenya-dadaab"),
    );
    copy(
        &project.mappings("kenya-dadaab"),
        &root.join("mappings").join(COUNTRY),
    );
}

/// The `bridge` binary in the copy, off the async runtime's threads.
async fn bridge(root: &Path, args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
    command
        .args(args)
        .env("BRIDGE_PROJECT_DIR", root)
        .envs(env.iter().cloned())
        .current_dir(root);
    output_off_runtime(command).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kakuma's filter: a best interest assessment goes to UNHCR's own panel
/// and opens no Primero case.
fn change_the_filter(job_dir: &Path) {
    let index = job_dir.join("index.js");
    let code = std::fs::read_to_string(&index).unwrap();
    let imports = "import { defineJob, emit } from '../lib/job.js';";
    let guard = "    if (!isObject(bundle.intervention)) throw badInput('intervention', 'bundle has no SHP-2358 intervention row');\n";
    assert!(code.contains(imports) && code.contains(guard), "{code}");
    let code = code
        .replace(imports, "import { defineJob, emit, skip } from '../lib/job.js';")
        .replace(
            guard,
            &format!(
                "{guard}    // Kakuma: UNHCR's own panel conducts best interest assessments.\n    if (text(bundle.intervention[K.description]) === '{BIA}') return skip('not-sent', 'best interest assessments go to the panel here');\n"
            ),
        );
    std::fs::write(&index, code).unwrap();
    // A fixture for it, without its expected file yet.
    let fixtures = job_dir.join("fixtures");
    let mut record: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("example-15.record.json")).unwrap(),
    )
    .unwrap();
    record["intervention"]["progres_interventiontype2.interventiontype.progres_description"] =
        BIA.into();
    std::fs::write(
        fixtures.join("bia-goes-to-the-panel.record.json"),
        serde_json::to_string_pretty(&record).unwrap(),
    )
    .unwrap();
}

fn name_in_deployment(country: &Path, job: &str) -> usize {
    let file = country.join("deployment.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = match text.find("\n[jobs]\n") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    std::fs::write(&file, format!("{text}\n[jobs]\n\"{SHARED}\" = \"{job}\"\n")).unwrap();
    // The line of the entry.
    text.lines().count() + 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_made_with_job_new_serves_its_flow_in_place_of_the_shared_job() {
    let project = ProjectDirs::locate().expect("project folder");
    project
        .build_jobs(&[SHARED.to_string()])
        .expect("jobs build");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("project");
    project_copy(&project, &root);
    let country = root.join("mappings").join(COUNTRY);
    let country_arg = country.display().to_string();
    let dist = root.join("jobs/dist");

    // 1. Fork: refused for an existing name or an unknown source, then made.
    let new = |name: &'static str, from: &'static str| {
        let root = root.clone();
        let country_arg = country_arg.clone();
        async move {
            bridge(
                &root,
                &[
                    "job",
                    "new",
                    name,
                    "--from",
                    from,
                    "--mappings",
                    &country_arg,
                ],
                &[],
            )
            .await
        }
    };
    let exists = new(SHARED, SHARED).await;
    assert_eq!(exists.status.code(), Some(1), "{}", text(&exists));
    assert!(
        text(&exists).contains("exists already"),
        "{}",
        text(&exists)
    );
    let unknown = new(VARIANT, "ping-9.9").await;
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("no job named `ping-9.9`"),
        "{}",
        text(&unknown)
    );
    let made = new(VARIANT, SHARED).await;
    assert_eq!(made.status.code(), Some(0), "{}", text(&made));
    let said = stdout(&made);
    assert!(
        said.contains(&format!("created jobs/{VARIANT}/"))
            && said.contains(&format!("\"{SHARED}\" = \"{VARIANT}\""))
            && said.contains("bridge job test"),
        "{said}"
    );
    let job_dir = root.join("jobs").join(VARIANT);
    change_the_filter(&job_dir);

    // 2. Named in the country's deployment.toml; its fixtures run there.
    name_in_deployment(&country, VARIANT);
    let tested = bridge(&root, &["job", "test", &country_arg], &[]).await;
    assert_eq!(tested.status.code(), Some(1), "{}", text(&tested));
    let summary = stdout(&tested);
    assert!(
        summary.contains(&format!("{VARIANT} (flow {SHARED}): 11 passed, 1 failed"))
            && summary.contains("FAILED bia-goes-to-the-panel: no expected file")
            && summary.contains(SKIP),
        "{summary}"
    );
    // The shared job does not serve this folder; the other flows' jobs do.
    assert!(!summary.contains(&format!("\n{SHARED} (flow")), "{summary}");
    assert!(summary.contains("ping-2.1 (flow ping-2.1): "), "{summary}");

    // 3. --update writes the outcome (and shows the diff); then all pass.
    let updated = bridge(&root, &["job", "test", &country_arg, "--update"], &[]).await;
    assert_eq!(updated.status.code(), Some(0), "{}", text(&updated));
    assert!(
        stdout(&updated).contains("UPDATED bia-goes-to-the-panel")
            && stdout(&updated).contains(&format!("+  \"reason\": \"{SKIP}\"")),
        "{}",
        text(&updated)
    );
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(job_dir.join("fixtures/bia-goes-to-the-panel.expected.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        expected,
        serde_json::json!({"outcome": "skip", "reason": SKIP})
    );
    // An expected file changed by hand fails with a diff.
    let example = job_dir.join("fixtures/example-15.expected.json");
    let original = std::fs::read_to_string(&example).unwrap();
    std::fs::write(
        &example,
        original.replace("803-24-PRTITV-1000123", "803-24-PRTITV-0000000"),
    )
    .unwrap();
    let drifted = bridge(&root, &["job", "test", &country_arg], &[]).await;
    assert_eq!(drifted.status.code(), Some(1), "{}", text(&drifted));
    assert!(
        stdout(&drifted).contains("FAILED example-15 (- expected")
            && stdout(&drifted).contains("-    \"intervention_number\": \"803-24-PRTITV-0000000\""),
        "{}",
        text(&drifted)
    );
    std::fs::write(&example, &original).unwrap();
    let passing = bridge(&root, &["job", "test", &country_arg], &[]).await;
    assert_eq!(passing.status.code(), Some(0), "{}", text(&passing));
    assert!(
        stdout(&passing).contains(&format!("{VARIANT} (flow {SHARED}): 12 passed, 0 failed")),
        "{}",
        text(&passing)
    );

    // The shared job, built, sits beside the variant in the jobs folder.
    std::fs::copy(
        project.job_wasm(SHARED),
        dist.join(format!("{SHARED}.wasm")),
    )
    .unwrap();
    let variant_wasm = dist.join(format!("{VARIANT}.wasm"));
    let inspected = bridge(
        &root,
        &[
            "job",
            "inspect",
            &variant_wasm.display().to_string(),
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(inspected.status.code(), Some(0), "{}", text(&inspected));
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["describe"]["name"], VARIANT);
    assert_eq!(inspected["describe"]["flow"], SHARED);
    assert_eq!(inspected["describe"]["version"], "0.1.0");

    // 4. mappings check, config check.
    let checked = bridge(
        &root,
        &["mappings", "check", &country_arg, "--allow-placeholders"],
        &[],
    )
    .await;
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    let sims = Simulators::start_loopback().await.unwrap();
    let seed = seed_workflow_1_1(&sims, 23);
    let config = tmp.path().join("bridge.toml");
    let config_arg = config.display().to_string();
    // `extra` goes into [jobs], the config's last table before [schedule].
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "{}{extra}\n[schedule]\n\"{SHARED}\" = \"0 0 0 1 1 * 2099\"\n",
                sims.config_toml(&dist, &country)
            ),
        )
        .unwrap()
    };
    write_config("");
    let env = sims.secret_env();
    let checked = bridge(&root, &["config", "check", &config_arg], &env).await;
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    assert!(
        stdout(&checked).contains(&format!("flows served by a variant: {SHARED} by {VARIANT}")),
        "{}",
        text(&checked)
    );

    // 5. Run it: the variant's filter, observable in Primero.
    let ran = bridge(
        &root,
        &[
            "flow",
            "run",
            "--init",
            SHARED,
            "--config",
            &config_arg,
            "--today",
            "2025-06-01",
            "--json",
        ],
        &env,
    )
    .await;
    // Some of the seed's records are held or failed by design: exit 2.
    assert_eq!(ran.status.code(), Some(2), "{}", text(&ran));
    let report: Value = serde_json::from_slice(&ran.stdout).unwrap();
    let outcome = |id: &str| {
        report["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source_id"] == id)
            .unwrap_or_else(|| panic!("no record {id}: {report:#}"))["outcome"]
            .clone()
    };
    // The seed's third new referral is the BIA: skipped by the variant (the
    // shared job creates its case, tests/e2e.rs); the other two are created.
    let bia = outcome(&seed.created_ids[2]);
    assert_eq!(bia["outcome"], "skipped", "{bia:#}");
    assert_eq!(bia["reason"], SKIP, "{bia:#}");
    for id in &seed.created_ids[..2] {
        assert_eq!(outcome(id)["outcome"], "created", "{report:#}");
    }
    let cases = sims.primero_sim().cases();
    assert_eq!(
        cases.len(),
        seed.cases_before + 2,
        "one case per sent referral"
    );
    let bia_person = &seed.people[2].progres_id;
    assert!(
        !cases
            .iter()
            .any(|c| c["unhcr_individual_no"] == bia_person.as_str()),
        "no case for the BIA referral"
    );
    // The service records the variant's component with its runs.
    let service = bridge(&root, &["run", "--once", "--config", &config_arg], &env).await;
    assert_eq!(service.status.code(), Some(0), "{}", text(&service));
    let runs = bridge(&root, &["runs", "--config", &config_arg, "--json"], &env).await;
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap_or_else(|| panic!("{runs:#}"));
    let shown = bridge(
        &root,
        &["runs", "show", id, "--config", &config_arg, "--json"],
        &env,
    )
    .await;
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let variant_hash = bridge_runtime::content_hash(&std::fs::read(&variant_wasm).unwrap());
    assert_eq!(shown["run"]["job_hash"], variant_hash.as_str(), "{shown:#}");
    let bia_row = shown["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_id"] == seed.created_ids[2].as_str())
        .unwrap_or_else(|| panic!("{shown:#}"));
    assert_eq!(bia_row["status"], "skipped", "{shown:#}");
    assert_eq!(bia_row["reason_code"], "not-sent", "{shown:#}");

    // Wrong names: refused by config check, naming file, line and key.
    for (job, says) in [
        (
            "ping-1.1-kakum",
            "job `ping-1.1-kakum` is not built: no ping-1.1-kakum.wasm in",
        ),
        (
            "ping-1.2",
            "job `ping-1.2` serves flow `ping-1.2`, not `ping-1.1`",
        ),
        ("Ping 1.1", "`Ping 1.1` is not a job name"),
    ] {
        let line = name_in_deployment(&country, job);
        let refused = bridge(&root, &["config", "check", &config_arg], &env).await;
        assert_eq!(refused.status.code(), Some(1), "{job}: {}", text(&refused));
        let at = format!(
            "{}:{line}: key `jobs.\"{SHARED}\"`",
            country.join("deployment.toml").display()
        );
        assert!(
            text(&refused).contains(&at) && text(&refused).contains(says),
            "{job}: {at}: {}",
            text(&refused)
        );
    }
    name_in_deployment(&country, VARIANT);

    // Approvals: the variant is a component like any other.
    let approvals = tmp.path().join("approvals.toml");
    let approvals_arg = approvals.display().to_string();
    for entry in std::fs::read_dir(&dist).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") && path != variant_wasm {
            approve(&root, &path, &approvals_arg).await;
        }
    }
    write_config(&format!(
        "approvals = \"{approvals_arg}\"\nrequire_approved = true\n"
    ));
    let refused = bridge(&root, &["config", "check", &config_arg], &env).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("job {VARIANT}: refused"))
            && text(&refused).contains("not approved"),
        "{}",
        text(&refused)
    );
    approve(&root, &variant_wasm, &approvals_arg).await;
    let approved = bridge(&root, &["config", "check", &config_arg], &env).await;
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
}

async fn approve(root: &Path, component: &Path, approvals: &str) {
    let out = bridge(
        root,
        &[
            "job",
            "approve",
            &component.display().to_string(),
            "--by",
            "auditor-1",
            "--file",
            approvals,
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

//! Hostile or broken job components: refused at load, or stopped at the
//! limit and reported per record, and the next record still runs. A job
//! cannot reach the environment, files, credentials or the network: it has
//! no import to do it with, and a component that asks for one is refused.
//!
//! The components are written in WAT (milliseconds to compile), implementing
//! the `bridge:job` world by hand through the canonical ABI. `run` looks at
//! the record's first byte: `b` traps, `l` loops forever, `m` grows memory
//! without bound, `e` returns a bad-input error, `j` emits invalid JSON, `o`
//! emits a 10 MiB string, `t` returns a fatal error (a thrown exception the
//! job caught); anything else emits `{"v":N}`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bridge_demo::scenario::{seed_workflow_1_1, Simulators};
use bridge_runtime::reload::{Catalog, ReloadEvent};
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{
    inspect_component, outcome_report, JobContext, JobInstance, JobOutcome, JobRuntime, Limits,
    LoadError, RuntimeConfig, ALLOWED_IMPORTS,
};
use bridge_service::config::BridgeConfig;
use bridge_store::OpenMode;

use super::support::{contains_bytes, short};
use super::{Kind, Row};
use bridge_testkit::wat::{component_wat, esc, le, test_job_wat as job_wat, Data, Imports, Job};

const SECTION: &str = "jobs";

pub fn component(version: u32) -> Vec<u8> {
    wat::parse_str(job_wat(version, "", &["services"])).expect("valid WAT")
}

fn runtime_in(dir: &Path, limits: Limits) -> Arc<JobRuntime> {
    Arc::new(
        JobRuntime::new(RuntimeConfig {
            cache_dir: dir.join("cache"),
            limits,
            epoch_tick: Duration::from_millis(5),
        })
        .expect("runtime"),
    )
}

fn ctx() -> JobContext {
    JobContext {
        flow: "test".into(),
        run_id: "run-1".into(),
        today: "2025-06-01".into(),
        dry_run: true,
    }
}

/// Runs `record` then a good record on the same instance; one row.
async fn per_record(
    inst: &mut JobInstance,
    case: &str,
    record: &str,
    want_kind: &str,
    expected: &str,
) -> Row {
    let result = inst.run(&ctx(), &format!("r-{case}"), record).await;
    let report = outcome_report(&result);
    let kind = report["kind"]
        .as_str()
        .unwrap_or(report["outcome"].as_str().unwrap_or("?"));
    let message = report["message"]
        .as_str()
        .or(report["reason"].as_str())
        .unwrap_or("")
        .to_string();
    let next = inst.run(&ctx(), "r-next", "{}").await;
    let next_ok = matches!(&next, Ok(JobOutcome::Emit(v)) if v == &serde_json::json!({"v": 1}));
    let pass = result.is_err() && kind == want_kind && next_ok;
    Row::new(
        SECTION,
        Kind::HostileJob,
        case,
        format!("{expected}; reported as `{want_kind}`; the next record runs"),
    )
    .observed(
        format!(
            "reported `{kind}`: {}; next record {}",
            short(&message, 100),
            if next_ok { "ran" } else { "FAILED" }
        ),
        pass,
    )
    .lost(u32::from(!next_ok))
}

async fn limits_rows(tmp: &Path, rows: &mut Vec<Row>) {
    let limits = Limits {
        call_timeout: Duration::from_millis(300),
        memory_bytes: 32 * 1024 * 1024,
        ..Limits::default()
    };
    let rt = runtime_in(tmp, limits);
    let job = rt
        .load_bytes("test-job", &component(1))
        .await
        .expect("load");
    let mut inst = JobInstance::new(Arc::new(job)).await.expect("instantiate");
    for (case, record, kind, expected) in [
        (
            "loops forever",
            "loop",
            "job-timeout",
            "stopped by the per-call deadline",
        ),
        (
            "allocates without bound",
            "memory",
            "job-memory-limit",
            "stopped at the memory cap (32 MiB here)",
        ),
        (
            "traps (an uncaught throw)",
            "boom",
            "job-trap",
            "trap caught",
        ),
        (
            "throws, caught by the job",
            "throw",
            "fatal",
            "a fatal job error",
        ),
        (
            "returns invalid JSON",
            "json",
            "job-invalid-output",
            "output refused",
        ),
        (
            "returns a 10 MiB string",
            "output",
            "job-invalid-output",
            "output refused at the 4 MiB limit",
        ),
        (
            "rejects its input",
            "error",
            "bad-input",
            "a bad-input error naming the field",
        ),
    ] {
        rows.push(per_record(&mut inst, case, record, kind, expected).await);
    }
}

async fn import_rows(tmp: &Path, rows: &mut Vec<Row>) {
    let rt = runtime_in(tmp, Limits::default());
    for (what, import) in [
        ("read a file", "wasi:filesystem/preopens@0.2.0"),
        ("read a file", "wasi:filesystem/types@0.2.0"),
        ("open a socket", "wasi:sockets/tcp@0.2.0"),
        ("open a socket", "wasi:sockets/udp@0.2.0"),
        ("resolve a name", "wasi:sockets/ip-name-lookup@0.2.0"),
        ("make an HTTP call", "wasi:http/outgoing-handler@0.2.0"),
        ("read an environment variable", "wasi:cli/environment@0.2.0"),
        ("read its arguments or stdin", "wasi:cli/stdin@0.2.0"),
        ("read a credential", "bridge:job/secrets@0.2.0"),
        (
            "use an older version of the log (built for contract 0.1.0)",
            "bridge:job/log@0.1.0",
        ),
    ] {
        let wat = job_wat(1, &format!("(import \"{import}\" (instance))"), &[]);
        let bytes = wat::parse_str(&wat).unwrap();
        let row = Row::new(
            SECTION,
            Kind::HostileJob,
            format!("imports `{import}` (to {what})"),
            format!("refused at load, naming `{import}`"),
        );
        rows.push(match rt.load_bytes("hostile", &bytes).await {
            Ok(_) => row.observed("LOADED", false),
            Err(e) => {
                let pass = matches!(&e, LoadError::ForbiddenImport { import: got, .. } if got == import)
                    && e.to_string().contains(import);
                row.observed(short(&e.to_string(), 140), pass)
            }
        });
    }
    // Wrong world: missing exports, and the right names with the wrong types.
    let wrong_world = [
        (
            "exports only `describe` (another world)",
            r#"(component
                (core module $m (func (export "f") (result i32) (i32.const 1)))
                (core instance $i (instantiate $m))
                (func $f (result u32) (canon lift (core func $i "f")))
                (export "describe" (func $f)))"#
                .to_string(),
        ),
        (
            "exports `describe`, `configure`, `run` with the wrong types",
            r#"(component
                (core module $m (func (export "f") (result i32) (i32.const 1)))
                (core instance $i (instantiate $m))
                (func $f (result u32) (canon lift (core func $i "f")))
                (export "describe" (func $f))
                (export "configure" (func $f))
                (export "run" (func $f)))"#
                .to_string(),
        ),
        ("not a component (a core module)", "(module)".to_string()),
    ];
    for (case, wat) in wrong_world {
        let bytes = wat::parse_str(&wat).unwrap();
        let row = Row::new(SECTION, Kind::HostileJob, case, "refused at load");
        rows.push(match rt.load_bytes("wrong", &bytes).await {
            Ok(_) => row.observed("LOADED", false),
            Err(e) => row.observed(short(&e.to_string(), 140), true),
        });
    }
    let row = Row::new(
        SECTION,
        Kind::HostileJob,
        "not WebAssembly at all",
        "refused at load",
    );
    rows.push(match rt.load_bytes("garbage", b"\0asm broken").await {
        Ok(_) => row.observed("LOADED", false),
        Err(e) => row.observed(short(&e.to_string(), 140), true),
    });
    // Control: the runtime that refused all of that still loads and runs a good job.
    let ok = match rt.load_bytes("test-job", &component(1)).await {
        Ok(job) => match JobInstance::new(Arc::new(job)).await {
            Ok(mut inst) => inst.run(&ctx(), "r", "{}").await.is_ok(),
            Err(_) => false,
        },
        Err(_) => false,
    };
    rows.push(
        Row::new(
            SECTION,
            Kind::HostileJob,
            "control: a good job on the same runtime",
            "loads and runs",
        )
        .observed(if ok { "loads and runs" } else { "FAILED" }, ok)
        .tried(0),
    );
}

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

/// A hostile version dropped onto a serving catalog is refused; the good
/// version keeps serving.
async fn hot_reload_row(tmp: &Path, rows: &mut Vec<Row>) {
    let rt = runtime_in(tmp, Limits::default());
    let jobs = tmp.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let job_file = jobs.join("test-job.wasm");
    std::fs::write(&job_file, component(1)).unwrap();
    let mappings = tmp.join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    std::fs::write(
        mappings.join("deployment.toml"),
        "[deployment]\ncountry = \"T\"\ndesign = \"ping\"\n",
    )
    .unwrap();
    std::fs::write(
        mappings.join("services.toml"),
        "description = \"t\"\n[map]\n\"a\" = \"b\"\n",
    )
    .unwrap();
    let catalog = Catalog::open(rt, std::slice::from_ref(&job_file), &mappings)
        .await
        .expect("catalog");
    let import = "wasi:filesystem/preopens@0.2.0";
    write_changed(
        &job_file,
        &wat::parse_str(job_wat(
            2,
            &format!("(import \"{import}\" (instance))"),
            &["services"],
        ))
        .unwrap(),
    );
    let events = catalog.poll().await;
    let refused =
        matches!(&events[..], [ReloadEvent::JobRefused { error, .. }] if error.contains(import));
    let serving = match catalog.instance("test-job").await {
        Ok(mut inst) => inst.run(&ctx(), "r", "{}").await.ok(),
        Err(_) => None,
    };
    let still_v1 = serving == Some(JobOutcome::Emit(serde_json::json!({"v": 1})));
    rows.push(
        Row::new(
            SECTION,
            Kind::HostileJob,
            format!("hot reload: a new version importing `{import}`"),
            "refused; the previous version keeps serving",
        )
        .observed(
            format!(
                "{}; {}",
                if refused { "refused" } else { "NOT refused" },
                if still_v1 {
                    "version 1 serves"
                } else {
                    "version 1 NOT serving"
                }
            ),
            refused && still_v1,
        )
        .lost(u32::from(!still_v1)),
    );
}

/// Another job's valid component copied over a job file is not swapped in:
/// a replacement must describe the same job name and flow. The old version
/// keeps serving.
async fn replacement_rows(tmp: &Path, rows: &mut Vec<Row>) {
    let name_seg = format!("(data (i32.const 100) \"{}\")", esc(b"test-job"));
    let flow_seg = format!("(data (i32.const 130) \"{}\")", esc(b"test"));
    let other_name = job_wat(2, "", &["services"]).replacen(
        &name_seg,
        &format!("(data (i32.const 100) \"{}\")", esc(b"other-jb")),
        1,
    );
    let other_flow = job_wat(2, "", &["services"]).replacen(
        &flow_seg,
        &format!("(data (i32.const 130) \"{}\")", esc(b"tost")),
        1,
    );
    assert!(other_name.contains(&esc(b"other-jb")) && other_flow.contains(&esc(b"tost")));
    for (what, wat) in [
        ("describes another job (`other-jb`)", other_name),
        ("serves another flow (`tost`)", other_flow),
    ] {
        let dir = tmp.join(format!("replace-{}", what.len()));
        let rt = runtime_in(&dir, Limits::default());
        let jobs = dir.join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let job_file = jobs.join("test-job.wasm");
        std::fs::write(&job_file, component(1)).unwrap();
        let mappings = dir.join("mappings");
        std::fs::create_dir_all(&mappings).unwrap();
        std::fs::write(
            mappings.join("deployment.toml"),
            "[deployment]\ncountry = \"T\"\ndesign = \"ping\"\n",
        )
        .unwrap();
        std::fs::write(
            mappings.join("services.toml"),
            "description = \"t\"\n[map]\n\"a\" = \"b\"\n",
        )
        .unwrap();
        let catalog = Catalog::open(rt, std::slice::from_ref(&job_file), &mappings)
            .await
            .expect("catalog");
        write_changed(&job_file, &wat::parse_str(&wat).unwrap());
        let events = catalog.poll().await;
        let refused = matches!(&events[..], [ReloadEvent::JobRefused { .. }]);
        let serving = match catalog.instance("test-job").await {
            Ok(mut inst) => inst.run(&ctx(), "r", "{}").await.ok(),
            Err(_) => None,
        };
        let still_v1 = serving == Some(JobOutcome::Emit(serde_json::json!({"v": 1})));
        let said = match &events[..] {
            [ReloadEvent::JobRefused { error, .. }] => short(error, 120),
            other => format!("{other:?}"),
        };
        rows.push(
            Row::new(
                SECTION,
                Kind::HostileJob,
                format!("hot reload: a valid component that {what} copied over the job file"),
                "refused (same job name and flow required); the previous version keeps serving",
            )
            .observed(
                format!(
                    "{}: {said}; {}",
                    if refused { "refused" } else { "NOT refused" },
                    if still_v1 {
                        "version 1 serves"
                    } else {
                        "version 1 NOT serving"
                    }
                ),
                refused && still_v1,
            )
            .lost(u32::from(!still_v1)),
        );
    }
}

/// `bridge job inspect` and loading agree on a component whose allowed
/// `types` import declares a function the host does not provide.
async fn inspect_agrees_with_load_row(tmp: &Path, rows: &mut Vec<Row>) {
    let file = tmp.join("extra-types-func.wasm");
    let wat = job_wat(
        1,
        "(import \"bridge:job/types@0.2.0\" (instance (export \"extra\" (func))))",
        &[],
    );
    let bytes = wat::parse_str(&wat).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let rt = runtime_in(&tmp.join("agree"), Limits::default());
    let loaded = rt.load_bytes("extra-types-func", &bytes).await;
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["job", "inspect"])
        .arg(&file)
        .env("BRIDGE_CACHE_DIR", tmp.join("cli-cache"))
        .output()
        .expect("run bridge");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let inspect_accepts = out.status.code() == Some(0) && stdout.contains("accepted: yes");
    let load_accepts = loaded.is_ok();
    let pass = inspect_accepts == load_accepts && !load_accepts;
    rows.push(
        Row::new(
            SECTION,
            Kind::HostileJob,
            "`bridge job inspect` on a component whose `bridge:job/types` import declares an extra function",
            "the same verdict as loading: refused (exit 1)",
        )
        .observed(
            format!(
                "inspect: {} (exit {}); load: {}",
                if inspect_accepts { "accepted" } else { "refused" },
                out.status.code().unwrap_or(-1),
                match &loaded {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => format!("refused: {}", short(&e.to_string(), 100)),
                }
            ),
            pass,
        ),
    );
}

/// Every built job imports only what the host allows.
async fn built_jobs_rows(rows: &mut Vec<Row>) -> Option<(PathBuf, PathBuf)> {
    let project = match ProjectDirs::locate() {
        Ok(p) => p,
        Err(e) => {
            rows.push(
                Row::new(SECTION, Kind::HostileJob, "built jobs", "found")
                    .observed(e.to_string(), false),
            );
            return None;
        }
    };
    let built = match project.build_jobs(&[]) {
        Ok(b) => b,
        Err(e) => {
            rows.push(
                Row::new(SECTION, Kind::HostileJob, "built jobs", "built")
                    .observed(e.to_string(), false),
            );
            return None;
        }
    };
    let rt = JobRuntime::new(RuntimeConfig::default()).expect("runtime");
    let mut ok_all = true;
    let mut detail = Vec::new();
    for path in &built {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        match rt.cache().load(rt.engine(), &name, &bytes) {
            Ok((component, _)) => {
                let report = inspect_component(rt.engine(), &component);
                let links = rt.link(&name, &component).is_ok();
                let imports: Vec<&str> = report
                    .imports
                    .iter()
                    .map(|i| i.split(' ').next().unwrap_or(""))
                    .collect();
                let only_allowed = imports.iter().all(|i| ALLOWED_IMPORTS.contains(i));
                ok_all &= report.names_allowed() && links && only_allowed;
                if !only_allowed {
                    detail.push(format!("{name} imports {}", imports.join(", ")));
                }
            }
            Err(e) => {
                ok_all = false;
                detail.push(format!("{name}: {e}"));
            }
        }
    }
    rows.push(
        Row::new(
            SECTION,
            Kind::HostileJob,
            format!("every built job in jobs/dist ({})", built.len()),
            format!("imports only {}", ALLOWED_IMPORTS.join(", ")),
        )
        .observed(
            if ok_all && !built.is_empty() {
                "only the log and types interfaces: no environment, file, socket or HTTP import"
                    .to_string()
            } else {
                detail.join("; ")
            },
            ok_all && !built.is_empty(),
        )
        .tried(0),
    );
    let job = project.job_wasm("ping-2.1");
    let record = project
        .jobs_src()
        .join("ping-2.1/fixtures/example-18.record.json");
    (job.is_file() && record.is_file()).then_some((job, record))
}

/// `bridge job inspect` on an accepted and a refused component.
fn inspect_rows(tmp: &Path, rows: &mut Vec<Row>) {
    let good = tmp.join("good.wasm");
    std::fs::write(&good, component(1)).unwrap();
    let bad = tmp.join("bad.wasm");
    let import = "wasi:sockets/tcp@0.2.0";
    std::fs::write(
        &bad,
        wat::parse_str(job_wat(
            1,
            &format!("(import \"{import}\" (instance))"),
            &[],
        ))
        .unwrap(),
    )
    .unwrap();
    for (case, file, want_code, want) in [
        (
            "`bridge job inspect` on an accepted component",
            &good,
            0,
            vec![
                "imports:",
                "exports:",
                "describe (func)",
                "run (func)",
                "accepted: yes",
            ],
        ),
        (
            "`bridge job inspect` on a refused component",
            &bad,
            1,
            vec![
                "imports:",
                import,
                "exports:",
                "refused: imports `wasi:sockets/tcp@0.2.0`",
            ],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(["job", "inspect"])
            .arg(file)
            .env("BRIDGE_CACHE_DIR", tmp.join("cli-cache"))
            .output()
            .expect("run bridge");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|w| !stdout.contains(w))
            .collect();
        let code = out.status.code().unwrap_or(-1);
        let pass = code == want_code && missing.is_empty();
        rows.push(
            Row::new(
                SECTION,
                Kind::HostileJob,
                case,
                format!(
                    "lists imports and exports; exit {want_code}, says {}",
                    if want_code == 0 {
                        "accepted"
                    } else {
                        "refused and why"
                    }
                ),
            )
            .observed(
                if pass {
                    format!("exit {code}; {}", want.last().unwrap())
                } else {
                    format!(
                        "exit {code}; lacks {missing:?}; stdout: {}",
                        short(&stdout, 120)
                    )
                },
                pass,
            ),
        );
    }
}

/// Log lines the leaking job writes per record.
const LEAK_LOG_LINES: u32 = 2000;
/// Size of the text the leaking job returns as a fatal message.
const LEAK_HUGE_BYTES: u32 = 20 * 1024 * 1024;
const ANSI: &[u8] = b"\x1b[2J\x1b[31m";

/// A job that tries to get the record it was given (names, dates of birth,
/// phone numbers) into logs, the state database and the CLI output: every
/// call logs [`LEAK_LOG_LINES`] lines whose message is terminal escapes plus
/// the whole record, with the record as the value of an allowed field
/// (`status`) and of another one; then returns, by turns, a skip reason
/// (escapes + record), a fatal error (the record), an unmapped value (the
/// record), a bad-input field and reason (the record), and a fatal message of
/// [`LEAK_HUGE_BYTES`].
fn leaking_job_wat() -> String {
    let mut data = Data::default();
    let mut seg = |at: u32, bytes: String| data.seg(at, bytes);
    seg(100, esc(b"leaky-job"));
    seg(120, esc(b"1.0.0"));
    seg(130, esc(b"test"));
    seg(
        200,
        [le(100), le(9), le(120), le(5), le(130), le(4), le(0), le(0)].concat(),
    );
    seg(240, le(0));
    seg(500, esc(ANSI));
    seg(600, esc(b"status"));
    seg(620, esc(b"given_name"));
    seg(640, esc(b"services"));
    // fields: [(status, record), (given_name, record)]; values stored at run.
    seg(
        800,
        [le(600), le(6), le(0), le(0), le(620), le(10), le(0), le(0)].concat(),
    );
    let ansi = ANSI.len();
    let a = 22 * 1024 * 1024; // escapes + record
    let b = 1024 * 1024; // the huge text
    let a_rec = a + ansi;
    let huge = LEAK_HUGE_BYTES;
    let logs = LEAK_LOG_LINES;
    component_wat(&Job {
        imports: Imports::Log,
        heap_start: 4096,
        globals: "(global $n (mut i32) (i32.const 0))",
        data: data.as_str(),
        describe_at: 200,
        configure_at: 240,
        run: &format!(
            r#"(local $i i32) (local $k i32) (local $alen i32)
      (if (i32.lt_u (memory.size) (i32.const 420))
        (then (drop (memory.grow (i32.sub (i32.const 420) (memory.size))))))
      (memory.fill (i32.const {b}) (i32.const 65) (i32.const {huge}))
      (memory.copy (i32.const {a}) (i32.const 500) (i32.const {ansi}))
      (memory.copy (i32.const {a_rec}) (local.get 7) (local.get 8))
      (local.set $alen (i32.add (local.get 8) (i32.const {ansi})))
      (i32.store (i32.const 808) (local.get 7))
      (i32.store (i32.const 812) (local.get 8))
      (i32.store (i32.const 824) (local.get 7))
      (i32.store (i32.const 828) (local.get 8))
      (block $done (loop $again
        (br_if $done (i32.ge_u (local.get $i) (i32.const {logs})))
        (call $emit (i32.const 3) (i32.const {a}) (local.get $alen) (i32.const 800) (i32.const 2))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $again)))
      (local.set $k (i32.rem_u (global.get $n) (i32.const 5)))
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (i32.store (i32.const 3000) (i32.const 1))
      (i32.store (i32.const 3004) (i32.const 2))
      (i32.store (i32.const 3008) (local.get 7))
      (i32.store (i32.const 3012) (local.get 8))
      (if (i32.eq (local.get $k) (i32.const 0)) (then
        (i32.store (i32.const 3000) (i32.const 0))
        (i32.store (i32.const 3004) (i32.const 1))
        (i32.store (i32.const 3008) (i32.const {a}))
        (i32.store (i32.const 3012) (local.get $alen))))
      (if (i32.eq (local.get $k) (i32.const 2)) (then
        (i32.store (i32.const 3004) (i32.const 1))
        (i32.store (i32.const 3008) (i32.const 640))
        (i32.store (i32.const 3012) (i32.const 8))
        (i32.store (i32.const 3016) (local.get 7))
        (i32.store (i32.const 3020) (local.get 8))))
      (if (i32.eq (local.get $k) (i32.const 3)) (then
        (i32.store (i32.const 3004) (i32.const 0))
        (i32.store (i32.const 3016) (local.get 7))
        (i32.store (i32.const 3020) (local.get 8))))
      (if (i32.eq (local.get $k) (i32.const 4)) (then
        (i32.store (i32.const 3008) (i32.const {b}))
        (i32.store (i32.const 3012) (i32.const {huge}))))
      (i32.const 3000)"#
        ),
    })
}

/// Simulators seeded for workflow 1.1 and a jobs folder holding the real
/// jobs except PING 1.1's, whose file name (`target`) a test fills with its
/// stand-in: (project, simulators, seed, temporary folder, jobs folder, target).
async fn stand_in(
    seed_no: u64,
) -> Result<
    (
        ProjectDirs,
        Simulators,
        bridge_demo::scenario::Seed11,
        tempfile::TempDir,
        PathBuf,
        String,
    ),
    String,
> {
    let project = ProjectDirs::locate().map_err(|e| e.to_string())?;
    let sims = Simulators::start_loopback()
        .await
        .map_err(|e| e.to_string())?;
    let seed = seed_workflow_1_1(&sims, seed_no);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).map_err(|e| e.to_string())?;
    let real_jobs =
        bridge_flows::app::job_files(&project.jobs_dist()).map_err(|e| e.to_string())?;
    let target = format!("{}.wasm", bridge_flows::ping_1_1::FLOW);
    for job in &real_jobs {
        let name = job.file_name().unwrap().to_string_lossy().into_owned();
        if name != target {
            std::os::unix::fs::symlink(job, jobs.join(&name)).map_err(|e| e.to_string())?;
        }
    }
    Ok((project, sims, seed, tmp, jobs, target))
}

/// A flow run (`bridge flow run ping-1.1`, trace logs) with [`leaking_job_wat`]
/// in place of the real job: no name, date of birth or phone number of the
/// simulators' people in the CLI output, the logs or the state database, no
/// escape character in the output, output and database bounded, and the
/// dropped log lines counted and reported.
async fn leak_rows(rows: &mut Vec<Row>) {
    let case = "flow ping-1.1 with a job that puts names and dates of birth in every text it returns, logs in a loop, returns 20 MiB and escape sequences";
    let fail = |rows: &mut Vec<Row>, why: String| {
        rows.push(Row::new(SECTION, Kind::HostileJob, case, "set up").observed(why, false));
    };
    let (project, sims, seed, tmp, jobs, target) = match stand_in(62).await {
        Ok(parts) => parts,
        Err(e) => return fail(rows, e),
    };
    std::fs::write(
        jobs.join(&target),
        wat::parse_str(leaking_job_wat()).expect("leaking job WAT"),
    )
    .unwrap();
    let config_file = tmp.path().join("bridge.toml");
    std::fs::write(
        &config_file,
        sims.config_toml(&jobs, &project.mappings("kenya-dadaab"))
            + "call_timeout_ms = 20000\n\n[retry]\nmax_attempts = 1\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge"));
    cmd.args(["flow", "run", "ping-1.1", "--init", "--config"])
        .arg(&config_file)
        .args(["--today", "2025-06-01", "--log", "trace"])
        .current_dir(tmp.path());
    for (k, v) in sims.secret_env() {
        cmd.env(k, v);
    }
    let out = tokio::task::block_in_place(|| cmd.output()).expect("run bridge");
    let mut output = out.stdout;
    output.extend(out.stderr);
    let mut db = Vec::new();
    for entry in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().contains(".db") {
            db.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    let text = String::from_utf8_lossy(&output);
    // Personal data of everyone in the simulators (ids are system ids).
    let personal: Vec<&str> = seed
        .people
        .iter()
        .flat_map(|p| {
            [
                p.given_name.as_str(),
                p.family_name.as_str(),
                p.date_of_birth.as_str(),
                p.phone.as_str(),
            ]
        })
        .filter(|s| s.len() >= 3)
        .collect();
    let in_output = personal
        .iter()
        .filter(|s| contains_bytes(&output, s))
        .count();
    let in_db = personal.iter().filter(|s| contains_bytes(&db, s)).count();
    let escapes = output.iter().filter(|b| **b == 0x1b).count();
    let job_lines = text.lines().filter(|l| l.contains("job: ")).count();
    let reported = text.contains("job log lines beyond");
    let records = seed.first_run.fetched;
    let ran = text.contains("leaky-job") || text.contains(bridge_flows::ping_1_1::FLOW);
    let bounded_lines = job_lines <= 20 * records.max(1);
    let pass = in_output == 0
        && in_db == 0
        && escapes == 0
        && output.len() < 2 * 1024 * 1024
        && db.len() < 4 * 1024 * 1024
        && bounded_lines
        && reported
        && ran
        && !db.is_empty();
    rows.push(
        Row::new(SECTION, Kind::HostileJob, case,
            format!("none of the {} names, dates of birth and phone numbers in the output, logs or database; no escape character; output < 2 MiB, database < 4 MiB; at most 20 job log lines a record, the rest counted and reported", personal.len()))
        .observed(
            format!(
                "exit {}; {} records; output {} bytes with {} of them, {} escape characters, {} job log lines{}; database {} bytes with {} of them",
                out.status.code().unwrap_or(-1),
                records,
                output.len(),
                in_output,
                escapes,
                job_lines,
                if reported { ", the dropped lines reported" } else { ", NO report of dropped lines" },
                db.len(),
                in_db
            ),
            pass,
        )
        .tried(records as u64),
    );
    sims.primero.shutdown().await;
    sims.ping.shutdown().await;
}

/// A whole flow run with a job that loops forever on every record: each
/// record is reported failed and stays pending in proGres; with the real job
/// back, the next run delivers exactly what a clean first run delivers: no
/// record lost, no case created twice.
async fn flow_rows(rows: &mut Vec<Row>) {
    let case = "flow ping-1.1, job loops forever on every record, then the real job returns";
    let fail = |rows: &mut Vec<Row>, why: String| {
        rows.push(Row::new(SECTION, Kind::HostileJob, case, "set up").observed(why, false));
    };
    let (project, sims, seed, tmp, jobs, target) = match stand_in(61).await {
        Ok(parts) => parts,
        Err(e) => return fail(rows, e),
    };
    let looping = job_wat(1, "", &[]).replacen(
        "      (i32.const 260))\n",
        "      (loop $forever (br $forever))\n      (i32.const 260))\n",
        1,
    );
    assert!(looping.contains("$forever"), "the loop was not inserted");
    std::fs::write(jobs.join(&target), wat::parse_str(&looping).unwrap()).unwrap();
    let config_file = tmp.path().join("bridge.toml");
    std::fs::write(
        &config_file,
        sims.config_toml(&jobs, &project.mappings("kenya-dadaab")) + "call_timeout_ms = 1000\n",
    )
    .unwrap();
    for (k, v) in sims.secret_env() {
        std::env::set_var(k, v);
    }
    let run = |n: u32| {
        let config_file = config_file.clone();
        async move {
            let config = BridgeConfig::load(&config_file).map_err(|e| e.to_string())?;
            let app = bridge_service::build::from_config(&config, None, OpenMode::Init)
                .await
                .map_err(|e| format!("{e:#}"))?;
            app.run_flow(
                bridge_flows::ping_1_1::FLOW,
                &format!("fault-matrix-{n}"),
                "2025-06-01",
            )
            .await
            .map_err(|e| format!("{e:#}"))
        }
    };
    let pending = || sims.ping_sim().pending_intervention_ids().len();
    let cases = || sims.primero_sim().case_count();

    // Run 1: the hostile job.
    let report = match run(1).await {
        Ok(r) => r,
        Err(e) => return fail(rows, e),
    };
    let job_failures = report
        .records
        .iter()
        .filter(|r| {
            r.outcome
                .reason_code()
                .is_some_and(|c| c.starts_with("job"))
        })
        .count();
    let codes: std::collections::BTreeSet<&str> = report
        .records
        .iter()
        .filter_map(|r| r.outcome.reason_code())
        .collect();
    let unreported = seed.first_run.fetched.saturating_sub(report.records.len());
    let pending_lost = seed.first_run.fetched.saturating_sub(pending());
    let pass = report.aborted.is_none()
        && report.fetched == seed.first_run.fetched
        && job_failures == report.records.len()
        && report.acknowledged() == 0
        && unreported == 0
        && pending_lost == 0
        && cases() == seed.cases_before;
    rows.push(
        Row::new(
            SECTION,
            Kind::HostileJob,
            "flow ping-1.1 with a job that loops forever on every record",
            format!(
                "each of the {} records reported failed by the job limit, none acknowledged, all still pending, no case written",
                seed.first_run.fetched
            ),
        )
        .observed(
            format!(
                "{} fetched, {} reported ({} by the job: {}), {} acknowledged, {} still pending, {} cases written{}",
                report.fetched,
                report.records.len(),
                job_failures,
                codes.into_iter().collect::<Vec<_>>().join(", "),
                report.acknowledged(),
                pending(),
                cases() - seed.cases_before,
                report.aborted.as_deref().map(|a| format!("; ABORTED: {a}")).unwrap_or_default()
            ),
            pass,
        )
        .lost((unreported + pending_lost) as u32),
    );

    // Run 2: the real job is back; the run is what a clean first run is.
    std::fs::remove_file(jobs.join(&target)).unwrap();
    std::os::unix::fs::symlink(project.jobs_dist().join(&target), jobs.join(&target)).unwrap();
    for (n, expected, label) in [
        (
            2,
            &seed.first_run,
            "then the real job: the same records delivered",
        ),
        (
            3,
            &seed.second_run,
            "and once more: nothing delivered twice",
        ),
    ] {
        let report = match run(n).await {
            Ok(r) => r,
            Err(e) => return fail(rows, e),
        };
        let diffs = expected.check(&report, pending());
        let written = cases() - seed.cases_before;
        let want_written = seed.first_run.created;
        rows.push(
            Row::new(
                SECTION,
                Kind::HostileJob,
                format!("flow ping-1.1: {label}"),
                format!(
                    "{} fetched, {} created, {} acknowledged, {} still pending; {want_written} cases in all",
                    expected.fetched, expected.created, expected.acknowledged, expected.still_pending
                ),
            )
            .observed(
                if diffs.is_empty() {
                    format!(
                        "{} fetched, {} created, {} acknowledged, {} still pending; {written} cases in all",
                        report.fetched,
                        report.count("created"),
                        report.acknowledged(),
                        pending()
                    )
                } else {
                    diffs.join("; ")
                },
                diffs.is_empty() && written == want_written,
            )
            .tried(0)
            .lost(want_written.saturating_sub(written) as u32)
            .duplicates(written.saturating_sub(want_written) as u32),
        );
    }
    sims.primero.shutdown().await;
    sims.ping.shutdown().await;
}

pub async fn run() -> Vec<Row> {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    limits_rows(tmp.path(), &mut rows).await;
    import_rows(tmp.path(), &mut rows).await;
    hot_reload_row(&tmp.path().join("reload"), &mut rows).await;
    replacement_rows(tmp.path(), &mut rows).await;
    inspect_rows(tmp.path(), &mut rows);
    inspect_agrees_with_load_row(tmp.path(), &mut rows).await;
    flow_rows(&mut rows).await;
    leak_rows(&mut rows).await;
    if let Some((job, record)) = built_jobs_rows(&mut rows).await {
        crate::fault_matrix::secrets::job_canary_row(&job, &record, &mut rows).await;
    }
    rows
}

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

use bridge::app::App;
use bridge::config::BridgeConfig;
use bridge::runtime::reload::{Catalog, ReloadEvent};
use bridge::runtime::{
    inspect_component, outcome_report, JobContext, JobInstance, JobOutcome, JobRuntime, Limits,
    LoadError, RuntimeConfig, ALLOWED_IMPORTS,
};
use bridge::sim::scenario::{seed_workflow_1_1, Simulators};
use bridge::store::OpenMode;
use bridge::toolchain::ProjectDirs;

use crate::support::short;
use crate::{Kind, Row};

const SECTION: &str = "jobs";
const OUTPUT_BYTES: u32 = 10 * 1024 * 1024;

fn le(n: u32) -> String {
    esc(&n.to_le_bytes())
}

fn esc(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A job component; `extra_imports` are component-level imports.
pub fn job_wat(version: u32, extra_imports: &str, tables: &[&str]) -> String {
    let emit = format!("{{\"v\":{version}}}");
    let bad_json = "{not json";
    let thrown = "Error: thrown";
    let field = "record.id";
    let reason = "missing";
    let mut data = String::new();
    let mut seg =
        |at: u32, bytes: String| data.push_str(&format!("(data (i32.const {at}) \"{bytes}\")\n"));
    seg(100, esc(b"test-job"));
    seg(120, esc(b"1.0.0"));
    seg(130, esc(b"test"));
    let mut at = 400u32;
    let mut elems = String::new();
    for t in tables {
        elems.push_str(&le(at));
        elems.push_str(&le(t.len() as u32));
        seg(at, esc(t.as_bytes()));
        at += 32;
    }
    if !elems.is_empty() {
        seg(140, elems);
    }
    seg(
        200,
        [
            le(100),
            le(8),
            le(120),
            le(5),
            le(130),
            le(4),
            le(140),
            le(tables.len() as u32),
        ]
        .concat(),
    );
    seg(240, le(0));
    seg(260, [le(0), le(0), le(300), le(emit.len() as u32)].concat());
    seg(300, esc(emit.as_bytes()));
    seg(
        340,
        [
            le(1),
            le(0),
            le(370),
            le(field.len() as u32),
            le(384),
            le(reason.len() as u32),
        ]
        .concat(),
    );
    seg(370, esc(field.as_bytes()));
    seg(384, esc(reason.as_bytes()));
    seg(
        700,
        [le(0), le(0), le(720), le(bad_json.len() as u32)].concat(),
    );
    seg(720, esc(bad_json.as_bytes()));
    // err(fatal(thrown)) at 760, text at 780
    seg(
        760,
        [le(1), le(2), le(780), le(thrown.len() as u32)].concat(),
    );
    seg(780, esc(thrown.as_bytes()));
    // ok(emit(<10 MiB of NULs from 64 KiB>)) at 820
    seg(820, [le(0), le(0), le(65536), le(OUTPUT_BYTES)].concat());
    let pages = OUTPUT_BYTES / 65536 + 2;

    format!(
        r#"(component
  {extra_imports}
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
        (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (block $ok
        (br_if $ok (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
        (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16)) (i32.const 1)))))
      (local.get $p))
    {data}
    (func (export "describe") (result i32) (i32.const 200))
    (func (export "configure") (param i32 i32) (result i32) (i32.const 240))
    (func (export "run") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $c i32)
      (local.set $c (i32.load8_u (local.get 7)))
      (if (i32.eq (local.get $c) (i32.const 98)) (then unreachable))
      (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $spin (br $spin))))
      (if (i32.eq (local.get $c) (i32.const 109))
        (then (loop $grow (drop (memory.grow (i32.const 16))) (br $grow))))
      (if (i32.eq (local.get $c) (i32.const 101)) (then (return (i32.const 340))))
      (if (i32.eq (local.get $c) (i32.const 106)) (then (return (i32.const 700))))
      (if (i32.eq (local.get $c) (i32.const 116)) (then (return (i32.const 760))))
      (if (i32.eq (local.get $c) (i32.const 111))
        (then
          (if (i32.lt_u (memory.size) (i32.const {pages}))
            (then (drop (memory.grow (i32.sub (i32.const {pages}) (memory.size))))))
          (return (i32.const 820))))
      (i32.const 260))
  )
  (core instance $i (instantiate $m))

  (type $field-error' (record (field "field" string) (field "reason" string)))
  (export $field-error "field-error" (type $field-error'))
  (type $unmapped-value' (record (field "table" string) (field "value" string)))
  (export $unmapped-value "unmapped-value" (type $unmapped-value'))
  (type $context' (record (field "flow" string) (field "run-id" string) (field "today" string) (field "dry-run" bool)))
  (export $context "context" (type $context'))
  (type $outcome' (variant (case "emit" (list u8)) (case "skip" string)))
  (export $outcome "outcome" (type $outcome'))
  (type $job-error' (variant (case "bad-input" $field-error) (case "unmapped" $unmapped-value) (case "fatal" string)))
  (export $job-error "job-error" (type $job-error'))
  (type $job-info' (record (field "name" string) (field "version" string) (field "flow" string) (field "tables" (list string))))
  (export $job-info "job-info" (type $job-info'))

  (func $describe (result $job-info)
    (canon lift (core func $i "describe") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "describe" (func $describe))
  (func $configure (param "mappings" string) (result (result (error $job-error)))
    (canon lift (core func $i "configure") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "configure" (func $configure))
  (func $run (param "ctx" $context) (param "record" string) (result (result $outcome (error $job-error)))
    (canon lift (core func $i "run") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "run" (func $run))
)"#
    )
}

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
                let imports: Vec<&str> = report
                    .imports
                    .iter()
                    .map(|i| i.split(' ').next().unwrap_or(""))
                    .collect();
                let only_allowed = imports.iter().all(|i| ALLOWED_IMPORTS.contains(i));
                ok_all &= report.accepted() && only_allowed;
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
    let job = project.job_wasm("primero-referral-to-progres");
    let record = project
        .jobs_src()
        .join("primero-referral-to-progres/fixtures/example-18.record.json");
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

/// A whole flow run with a job that loops forever on every record: each
/// record is reported failed and stays pending in proGres; with the real job
/// back, the next run delivers exactly what a clean first run delivers: no
/// record lost, no case created twice.
async fn flow_rows(rows: &mut Vec<Row>) {
    let case = "flow ping-1.1, job loops forever on every record, then the real job returns";
    let fail = |rows: &mut Vec<Row>, why: String| {
        rows.push(Row::new(SECTION, Kind::HostileJob, case, "set up").observed(why, false));
    };
    let project = match ProjectDirs::locate() {
        Ok(p) => p,
        Err(e) => return fail(rows, e.to_string()),
    };
    let sims = match Simulators::start_loopback().await {
        Ok(s) => s,
        Err(e) => return fail(rows, e.to_string()),
    };
    let seed = seed_workflow_1_1(&sims, 61);
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let real_jobs = match bridge::app::job_files(&project.jobs_dist()) {
        Ok(j) => j,
        Err(e) => return fail(rows, e.to_string()),
    };
    let target = format!("{}.wasm", bridge::flows::ping_referral_to_primero::JOB);
    for job in &real_jobs {
        let name = job.file_name().unwrap().to_string_lossy().into_owned();
        if name != target {
            std::os::unix::fs::symlink(job, jobs.join(&name)).unwrap();
        }
    }
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
        sims.config_toml(&jobs, &project.mappings("kenya-dadaab")) + "call_timeout_ms = 300\n",
    )
    .unwrap();
    for (k, v) in sims.secret_env() {
        std::env::set_var(k, v);
    }
    let run = |n: u32| {
        let config_file = config_file.clone();
        async move {
            let config = BridgeConfig::load(&config_file).map_err(|e| e.to_string())?;
            let app = App::from_config(&config, None, OpenMode::Init)
                .await
                .map_err(|e| format!("{e:#}"))?;
            app.run_flow(
                bridge::flows::ping_referral_to_primero::FLOW,
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
    let real = real_jobs
        .iter()
        .find(|j| j.ends_with(&target))
        .expect("real job");
    std::os::unix::fs::symlink(real, jobs.join(&target)).unwrap();
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
    inspect_rows(tmp.path(), &mut rows);
    flow_rows(&mut rows).await;
    if let Some((job, record)) = built_jobs_rows(&mut rows).await {
        crate::secrets::job_canary_row(&job, &record, &mut rows).await;
    }
    rows
}

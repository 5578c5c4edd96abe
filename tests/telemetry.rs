//! Telemetry: scrubbed logs in both formats (host events, span fields, and a
//! job logging through the real WIT `log` import), the `/metrics` families,
//! `/healthz` and `/readyz`, and the `--log-format json` flag of the binary.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bridge_runtime::{JobContext, JobInstance, JobOutcome, JobRuntime, RuntimeConfig};
use bridge_telemetry::http::{router, Health, METRICS_CONTENT_TYPE};
use bridge_telemetry::{make_layer, metrics, LogFormat};
use bridge_testkit::wat::{component_wat, esc, le, Data, Imports, Job};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;
use tracing::Instrument as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Invented personal data; none of it may reach a log line.
const FORBIDDEN: &[&str] = &["Amina", "Okello", "2011-03-04", "+256700123456", "Plot 12"];

// ---------------------------------------------------------------- capture

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Buf {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }
}

/// A subscriber writing to a buffer, set for the current thread while the
/// guard lives.
fn capture(format: LogFormat) -> (Buf, tracing::subscriber::DefaultGuard) {
    let buf = Buf::default();
    let sub = tracing_subscriber::registry().with(make_layer(format, buf.clone()));
    (buf.clone(), tracing::subscriber::set_default(sub))
}

fn assert_no_personal_data(out: &str) {
    for v in FORBIDDEN {
        assert!(!out.contains(v), "{v:?} reached the log:\n{out}");
    }
}

/// A host event with allowed and forbidden fields, inside run → record spans
/// whose own forbidden fields must not show either.
fn log_inside_spans() {
    let run = tracing::info_span!(
        "run",
        flow = "ping-1.1",
        run = "run-42",
        given_name = "Amina"
    );
    let _r = run.enter();
    let record = tracing::info_span!("record", record = "IV-77", address = "Plot 12");
    let _c = record.enter();
    tracing::info!(
        outcome = "created",
        attempt = 2u64,
        given_name = "Amina",
        family_name = %"Okello",
        date_of_birth = ?"2011-03-04",
        phone = "+256700123456",
        "record delivered"
    );
}

// ---------------------------------------------------------------- host events

#[test]
fn json_lines_carry_flow_run_record_and_no_personal_data() {
    let (buf, guard) = capture(LogFormat::Json);
    log_inside_spans();
    drop(guard);
    let out = buf.text();
    assert_no_personal_data(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(v["message"], "record delivered");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["flow"], "ping-1.1");
    assert_eq!(v["run"], "run-42");
    assert_eq!(v["record"], "IV-77");
    assert_eq!(v["outcome"], "created");
    assert_eq!(v["attempt"], 2);
    assert_eq!(v["spans"], serde_json::json!(["run", "record"]));
    for k in [
        "given_name",
        "family_name",
        "date_of_birth",
        "phone",
        "address",
    ] {
        assert!(v.get(k).is_none(), "{k} kept: {out}");
    }
}

#[test]
fn human_lines_carry_flow_run_record_and_no_personal_data() {
    let (buf, guard) = capture(LogFormat::Human);
    log_inside_spans();
    drop(guard);
    let out = buf.text();
    assert_no_personal_data(&out);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("run{flow=ping-1.1 run=run-42}:record{record=IV-77}:"),
        "{out}"
    );
    assert!(
        out.contains("record delivered outcome=created attempt=2"),
        "{out}"
    );
    for k in [
        "given_name",
        "family_name",
        "date_of_birth",
        "phone",
        "address",
    ] {
        assert!(!out.contains(k), "{k} kept: {out}");
    }
}

// ---------------------------------------------------------------- a job's log

const JOB_MESSAGE: &str = "mapped record";

/// What the job logs: an id it may log, personal data it may not, and a
/// host-only key (free text from a job is not trusted).
const JOB_FIELDS: &[(&str, &str)] = &[
    ("intervention_id", "IV-77"),
    ("given_name", "Amina"),
    ("date_of_birth", "2011-03-04"),
    ("phone", "+256700123456"),
    ("error", "Amina lives at Plot 12"),
];

/// A job component whose `run` logs [`JOB_FIELDS`] through the WIT `log`
/// import, then emits `{"v":1}`. The canonical ABI by hand, as in
/// host/tests/runtime.rs; the memory lives in its own core module so the
/// `log` import can be lowered before the main module is instantiated.
fn logging_job_wat() -> String {
    let emit = "{\"v\":1}";
    let mut data = Data::default();
    let mut seg = |at: u32, bytes: String| data.seg(at, bytes);
    seg(100, esc(b"telemetry-job"));
    seg(120, esc(b"1.0.0"));
    seg(130, esc(b"test"));
    // describe() -> job-info at 200; no tables.
    seg(
        200,
        [
            le(100),
            le(13),
            le(120),
            le(5),
            le(130),
            le(4),
            le(0),
            le(0),
        ]
        .concat(),
    );
    // configure: ok
    seg(240, le(0));
    // run: ok(emit(json)) at 260, json at 300
    seg(260, [le(0), le(0), le(300), le(emit.len() as u32)].concat());
    seg(300, esc(emit.as_bytes()));
    // log message at 340
    seg(340, esc(JOB_MESSAGE.as_bytes()));
    // field strings from 400, list<tuple<string,string>> at 800
    let mut at = 400u32;
    let mut list = String::new();
    for (k, v) in JOB_FIELDS {
        for s in [k, v] {
            seg(at, esc(s.as_bytes()));
            list.push_str(&le(at));
            list.push_str(&le(s.len() as u32));
            at += 40;
        }
    }
    assert!(at <= 800, "field strings overlap the list");
    seg(800, list);
    let n_fields = JOB_FIELDS.len();
    let msg_len = JOB_MESSAGE.len();

    component_wat(&Job {
        imports: Imports::Log,
        heap_start: 1024,
        globals: "",
        data: data.as_str(),
        describe_at: 200,
        configure_at: 240,
        run: &format!(
            r#"(call $emit (i32.const 1) (i32.const 340) (i32.const {msg_len}) (i32.const 800) (i32.const {n_fields}))
      (i32.const 260)"#
        ),
    })
}

fn logging_job() -> Vec<u8> {
    wat::parse_str(logging_job_wat()).expect("valid WAT")
}

fn runtime_in(dir: &Path) -> JobRuntime {
    JobRuntime::new(RuntimeConfig {
        cache_dir: dir.join("cache"),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

async fn run_logging_job(rt: &JobRuntime) -> JobOutcome {
    let job = rt
        .load_bytes("telemetry-job", &logging_job())
        .await
        .expect("load");
    let mut inst = JobInstance::new(Arc::new(job)).await.expect("instantiate");
    let ctx = JobContext {
        flow: "test-flow".into(),
        run_id: "run-7".into(),
        today: "2025-06-01".into(),
        dry_run: true,
    };
    let run = tracing::info_span!("run", flow = "test-flow", run = "run-7");
    let record = tracing::info_span!(parent: &run, "record", record = "IV-77");
    async { inst.run(&ctx, "IV-77", "{}").await.expect("run") }
        .instrument(record)
        .instrument(run)
        .await
}

#[tokio::test]
async fn a_job_log_through_the_wit_import_is_scrubbed() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path());
    let (buf, guard) = capture(LogFormat::Json);
    let outcome = run_logging_job(&rt).await;
    drop(guard);
    assert_eq!(outcome, JobOutcome::Emit(serde_json::json!({"v": 1})));
    let out = buf.text();
    assert_no_personal_data(&out);
    let line = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|v| v["message"] == format!("job: {JOB_MESSAGE}"))
        .unwrap_or_else(|| panic!("no job log line in\n{out}"));
    assert_eq!(line["job"], "telemetry-job");
    assert_eq!(line["flow"], "test-flow");
    assert_eq!(line["run"], "run-7");
    assert_eq!(line["record"], "IV-77");
    assert_eq!(line["fields"], "intervention_id=IV-77");
    assert_eq!(line["dropped"], 4);
}

#[tokio::test]
async fn a_job_log_is_scrubbed_in_the_human_format_too() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path());
    let (buf, guard) = capture(LogFormat::Human);
    run_logging_job(&rt).await;
    drop(guard);
    let out = buf.text();
    assert_no_personal_data(&out);
    let line = out
        .lines()
        .find(|l| l.contains(JOB_MESSAGE))
        .unwrap_or_else(|| panic!("no job log line in\n{out}"));
    assert!(
        line.contains("run{flow=test-flow run=run-7}:record{record=IV-77}:"),
        "{line}"
    );
    assert!(
        line.contains("fields=intervention_id=IV-77 dropped=4"),
        "{line}"
    );
}

// ---------------------------------------------------------------- metrics

async fn get(router: axum::Router, path: &str) -> (StatusCode, String, String) {
    let resp = router
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn metrics_endpoint_shows_the_families_with_their_labels() {
    // Label values unique to this test: the registry is process-wide.
    let m = metrics();
    m.record("tm-flow", "created");
    m.record("tm-flow", "created");
    m.record("tm-flow", "failed");
    m.run_finished("tm-flow", "ok", 2.0);
    m.retry("tm-system");
    m.set_dead_letter("tm-flow", 5);
    m.job_call("tm-job", 0.000_02);
    m.component_load("tm-job", 0.3, false);
    m.component_load("tm-job", 0.01, true);
    m.set_inbox_pending(3);

    let (status, ctype, body) = get(router(Health::new()), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, METRICS_CONTENT_TYPE);
    for needle in [
        "# TYPE bridge_records counter",
        "bridge_records_total{flow=\"tm-flow\",outcome=\"created\"} 2",
        "bridge_records_total{flow=\"tm-flow\",outcome=\"failed\"} 1",
        "bridge_runs_total{flow=\"tm-flow\",outcome=\"ok\"} 1",
        "# TYPE bridge_run_duration_seconds histogram",
        "bridge_run_duration_seconds_sum{flow=\"tm-flow\"} 2.0",
        "bridge_partner_retries_total{system=\"tm-system\"} 1",
        "bridge_dead_letter_size{flow=\"tm-flow\"} 5",
        "bridge_job_call_seconds_count{job=\"tm-job\"} 1",
        "bridge_job_call_seconds_bucket{le=\"0.00001\",job=\"tm-job\"} 0",
        "bridge_component_load_seconds_count{job=\"tm-job\",source=\"compiled\"} 1",
        "bridge_component_load_seconds_count{job=\"tm-job\",source=\"cache\"} 1",
        "bridge_inbox_pending 3",
        "# EOF",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
}

#[tokio::test]
async fn job_calls_and_component_loads_are_measured_by_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_in(tmp.path());
    run_logging_job(&rt).await; // compiled
    run_logging_job(&rt).await; // from the precompile cache
    let text = metrics().encode();
    let count = |needle: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(needle))
            .unwrap_or_else(|| panic!("missing {needle} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    // Other tests in this binary run the same job: at least, not exactly.
    assert!(count("bridge_job_call_seconds_count{job=\"telemetry-job\"}") >= 2);
    assert!(
        count("bridge_component_load_seconds_count{job=\"telemetry-job\",source=\"compiled\"}")
            >= 1
    );
    assert!(
        count("bridge_component_load_seconds_count{job=\"telemetry-job\",source=\"cache\"}") >= 1
    );
}

// ---------------------------------------------------------------- health

#[tokio::test]
async fn healthz_is_ok_and_readyz_follows_readiness() {
    let health = Health::new();
    let app = router(health.clone());

    let (status, _, body) = get(app.clone(), "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let (status, _, body) = get(app.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["reason"], "starting");

    health.set_ready(true);
    let (status, _, body) = get(app.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    health.set_not_ready("store closed");
    let (status, _, body) = get(app.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["reason"],
        "store closed"
    );

    let (status, _, _) = get(app, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "healthz does not follow readiness");
}

#[tokio::test]
async fn the_router_serves_on_a_loopback_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = Health::new();
    health.set_ready(true);
    let server = tokio::spawn(async move {
        axum::serve(listener, router(health)).await.unwrap();
    });
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        METRICS_CONTENT_TYPE
    );
    assert!(resp.text().await.unwrap().ends_with("# EOF\n"));
    let resp = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.abort();
}

// ---------------------------------------------------------------- the binary

/// `bridge --log-format json job run` on the logging job: every stderr line is
/// JSON and the job's personal data is gone. Also through BRIDGE_LOG_FORMAT.
#[test]
fn the_binary_writes_scrubbed_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let job = tmp.path().join("telemetry-job.wasm");
    std::fs::write(&job, logging_job()).unwrap();
    let record = tmp.path().join("record.json");
    std::fs::write(&record, "{}").unwrap();
    let mappings = tmp.path().join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    std::fs::write(
        mappings.join("deployment.toml"),
        "[deployment]\ncountry = \"Testland\"\ndesign = \"ping\"\n",
    )
    .unwrap();

    let run = |flag: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bridge"));
        if flag {
            cmd.args(["--log-format", "json"]);
        } else {
            cmd.env("BRIDGE_LOG_FORMAT", "json");
        }
        cmd.args(["job", "run"])
            .arg(&job)
            .arg("--record")
            .arg(&record)
            .arg("--mappings")
            .arg(&mappings)
            .env("BRIDGE_LOG", "bridge=debug")
            .env("BRIDGE_CACHE_DIR", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    for flag in [true, false] {
        let out = run(flag);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert_no_personal_data(&stderr);
        let lines: Vec<Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let job_line = lines
            .iter()
            .find(|v| v["message"] == format!("job: {JOB_MESSAGE}"))
            .unwrap_or_else(|| panic!("no job log line in\n{stderr}"));
        assert_eq!(job_line["fields"], "intervention_id=IV-77", "{stderr}");
        assert!(
            lines
                .iter()
                .any(|v| v["message"] == "job loaded" && v["job"] == "telemetry-job"),
            "{stderr}"
        );
    }
}

//! Bad input at the inbox edge (`POST /dtp/inbox`): every refusal is the right
//! 4xx with `{"error", "reason"}`, the reason never quotes a value, and the
//! store holds nothing afterwards.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bridge_inbox::conn::accept_loop;
use bridge_inbox::validate::required_fields;
use bridge_inbox::{
    router, ConnectionLimits, InboxKind, InboxState, DEFAULT_MAX_BODY_BYTES, INBOX_PATH,
};
use bridge_sim::people::PeopleGenerator;
use bridge_store::{OpenMode, Sealer, SqliteStore, Store};
use serde_json::{json, Value};

use super::support::{contains_bytes, short};
use super::{Kind, Row};

const SECTION: &str = "inbox";
const API_KEY: &str = "fault-matrix-inbox-key-0123456789";

struct Harness {
    state: InboxState,
    store: Arc<SqliteStore>,
    db: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Harness {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("state.db");
        let store = Arc::new(SqliteStore::open(&db, OpenMode::Init).await.unwrap());
        let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
        let state = InboxState::new(store.clone(), sealer, API_KEY, DEFAULT_MAX_BODY_BYTES);
        Self {
            state,
            store,
            db,
            _tmp: tmp,
        }
    }

    async fn send(&self, request: axum::http::Request<Body>) -> Answer {
        let response = tower::ServiceExt::oneshot(router(self.state.clone()), request)
            .await
            .expect("the router always answers");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn post(&self, key: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request =
            axum::http::Request::post(INBOX_PATH).header("content-type", "application/json");
        if let Some(k) = key {
            request = request.header("x-api-key", k);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// Rows in the inbox table (any state).
    async fn stored(&self) -> usize {
        self.store.inbox_states().await.unwrap().len()
    }

    fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-journal"] {
            if let Ok(b) = std::fs::read(format!("{}{suffix}", self.db.display())) {
                all.extend(b);
            }
        }
        all
    }
}

struct Case {
    name: String,
    key: Option<String>,
    body: Vec<u8>,
    /// Set a content-length header of this value instead of the real one.
    declared: Option<u64>,
    method: &'static str,
    path: &'static str,
    status: u16,
    code: &'static str,
}

impl Case {
    fn post(name: impl Into<String>, body: Vec<u8>, status: u16, code: &'static str) -> Self {
        Self {
            name: name.into(),
            key: Some(API_KEY.into()),
            body,
            declared: None,
            method: "POST",
            path: INBOX_PATH,
            status,
            code,
        }
    }
    fn json(name: impl Into<String>, body: Value, status: u16, code: &'static str) -> Self {
        Self::post(name, serde_json::to_vec(&body).unwrap(), status, code)
    }
}

fn type_samples(name: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("a number", json!(803)),
        ("a boolean", json!(true)),
        ("an array", json!([name])),
        ("an object", json!({"v": name})),
    ]
}

fn good_row(kind: InboxKind, name: &str) -> serde_json::Map<String, Value> {
    let mut row = serde_json::Map::new();
    for f in required_fields(kind) {
        row.insert((*f).to_string(), json!("803-24-PRTITV-0000001"));
    }
    if kind == InboxKind::PrimeroIncomingReferralDecision {
        row.insert("progres_reviewdecision".into(), json!("125080000"));
    }
    row.insert("individuals.progres_givenname".into(), json!(name));
    row
}

fn message(kind: InboxKind, rows: Vec<serde_json::Map<String, Value>>) -> Value {
    json!({"request_type": kind.request_type(), "interventions": rows})
}

fn cases(name: &str) -> Vec<Case> {
    let kinds = [
        InboxKind::PrimeroOutgoingReferral,
        InboxKind::PrimeroIncomingReferralDecision,
    ];
    let good = message(kinds[0], vec![good_row(kinds[0], name)]);
    let good_bytes = serde_json::to_vec(&good).unwrap();
    let mut out = Vec::new();

    // 401 before anything else.
    let mut c = Case::post(
        "API key header missing",
        good_bytes.clone(),
        401,
        "unauthorized",
    );
    c.key = None;
    out.push(c);
    let mut c = Case::post(
        "API key wrong (one character off)",
        good_bytes.clone(),
        401,
        "unauthorized",
    );
    c.key = Some(format!("{}8", &API_KEY[..API_KEY.len() - 1]));
    out.push(c);
    let mut c = Case::post("API key empty", good_bytes.clone(), 401, "unauthorized");
    c.key = Some(String::new());
    out.push(c);
    let mut c = Case::post(
        "API key with the right prefix and extra",
        good_bytes.clone(),
        401,
        "unauthorized",
    );
    c.key = Some(format!("{API_KEY}x"));
    out.push(c);
    let mut c = Case::post(
        "wrong API key and a huge body",
        vec![b' '; DEFAULT_MAX_BODY_BYTES + 10],
        401,
        "unauthorized",
    );
    c.key = Some("nope".into());
    out.push(c);

    // 413: huge bodies.
    let mut huge = good_bytes.clone();
    huge.resize(DEFAULT_MAX_BODY_BYTES + 1, b' ');
    out.push(Case::post(
        "huge body (1 MiB + 1 byte, streamed)",
        huge,
        413,
        "body-too-large",
    ));
    let mut c = Case::post(
        "huge declared content-length (64 MiB)",
        b"{}".to_vec(),
        413,
        "body-too-large",
    );
    c.declared = Some(64 << 20);
    out.push(c);
    let mut big_string = String::from("{\"request_type\":\"PrimeroOutgoingReferral\",\"x\":\"");
    big_string.push_str(&"a".repeat(4 * DEFAULT_MAX_BODY_BYTES));
    big_string.push_str("\"}");
    out.push(Case::post(
        "4 MiB JSON string value",
        big_string.into_bytes(),
        413,
        "body-too-large",
    ));

    // 400: not UTF-8, not JSON, nested too deep.
    out.push(Case::post(
        "invalid UTF-8 (0xff 0xfe in a string)",
        b"{\"request_type\": \"Primero\xff\xfe\"}".to_vec(),
        400,
        "invalid-utf8",
    ));
    out.push(Case::post(
        "invalid UTF-8 (lone continuation byte)",
        b"\x80{}".to_vec(),
        400,
        "invalid-utf8",
    ));
    out.push(Case::post(
        "invalid UTF-8 (overlong encoding)",
        b"{\"a\":\"\xc0\xaf\"}".to_vec(),
        400,
        "invalid-utf8",
    ));
    out.push(Case::post(
        "invalid UTF-8 (UTF-16 surrogate)",
        b"{\"a\":\"\xed\xa0\x80\"}".to_vec(),
        400,
        "invalid-utf8",
    ));
    out.push(Case::post("empty body", Vec::new(), 400, "malformed-json"));
    out.push(Case::post(
        "malformed JSON (truncated, quotes a name)",
        format!("{{\"request_type\": \"{name}").into_bytes(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (trailing comma)",
        b"{\"request_type\": \"PrimeroOutgoingReferral\",}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (two documents)",
        b"{} {}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (single quotes)",
        b"{'request_type': 'x'}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (NaN)",
        b"{\"a\": NaN}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (byte-order mark)",
        b"\xef\xbb\xbf{}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (bad escape in a string)",
        b"{\"a\": \"\\q\"}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (lone surrogate escape)",
        b"{\"a\": \"\\ud800\"}".to_vec(),
        400,
        "malformed-json",
    ));
    out.push(Case::post(
        "malformed JSON (NUL byte)",
        b"{\"a\":\x00}".to_vec(),
        400,
        "malformed-json",
    ));
    let deep = format!(
        "{{\"request_type\":\"PrimeroOutgoingReferral\",\"interventions\":{}{}}}",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    out.push(Case::post(
        "deeply nested arrays (200,000 levels)",
        deep.into_bytes(),
        400,
        "nesting-too-deep",
    ));
    out.push(Case::post(
        "deeply nested objects, unbalanced (100,000 levels)",
        "{\"a\":".repeat(100_000).into_bytes(),
        400,
        "nesting-too-deep",
    ));
    let just_over = format!("{}{}", "[".repeat(33), "]".repeat(33));
    out.push(Case::post(
        "nesting one level over the limit (33)",
        just_over.into_bytes(),
        400,
        "nesting-too-deep",
    ));

    // 422: shape, routing, required fields.
    out.push(Case::json(
        "top-level array",
        json!([good.clone()]),
        422,
        "wrong-type",
    ));
    out.push(Case::json(
        "top-level string",
        json!(name),
        422,
        "wrong-type",
    ));
    out.push(Case::json("top-level number", json!(1), 422, "wrong-type"));
    out.push(Case::json("top-level null", Value::Null, 422, "wrong-type"));
    out.push(Case::json(
        "unknown request_type (a name)",
        json!({"request_type": name, "interventions": [good_row(kinds[0], name)]}),
        422,
        "unknown-request-type",
    ));
    out.push(Case::json("unknown request_type (case differs)", json!({"request_type": "primerooutgoingreferral", "interventions": [good_row(kinds[0], name)]}), 422, "unknown-request-type"));
    out.push(Case::json(
        "request_type empty",
        json!({"request_type": "", "interventions": [good_row(kinds[0], name)]}),
        422,
        "unknown-request-type",
    ));
    out.push(Case::json(
        "request_type missing",
        json!({"interventions": [good_row(kinds[0], name)]}),
        422,
        "missing-field",
    ));
    out.push(Case::json(
        "request_type null",
        json!({"request_type": null, "interventions": [good_row(kinds[0], name)]}),
        422,
        "missing-field",
    ));
    for (tname, v) in type_samples(name) {
        out.push(Case::json(
            format!("request_type is {tname}"),
            json!({"request_type": v, "interventions": [good_row(kinds[0], name)]}),
            422,
            "wrong-type",
        ));
    }
    for kind in kinds {
        let rt = kind.request_type();
        out.push(Case::json(
            format!("{rt}: interventions missing"),
            json!({"request_type": rt}),
            422,
            "missing-field",
        ));
        out.push(Case::json(
            format!("{rt}: interventions null"),
            json!({"request_type": rt, "interventions": null}),
            422,
            "missing-field",
        ));
        out.push(Case::json(
            format!("{rt}: interventions empty"),
            json!({"request_type": rt, "interventions": []}),
            422,
            "empty-field",
        ));
        for (tname, v) in [
            ("a string", json!(name)),
            ("a number", json!(1)),
            ("a boolean", json!(false)),
            ("an object", Value::Object(good_row(kind, name))),
        ] {
            out.push(Case::json(
                format!("{rt}: interventions is {tname}"),
                json!({"request_type": rt, "interventions": v}),
                422,
                "wrong-type",
            ));
        }
        for (tname, v) in [
            ("a string", json!(name)),
            ("a number", json!(7)),
            ("null", Value::Null),
            ("an array", json!([good_row(kind, name)])),
        ] {
            out.push(Case::json(
                format!("{rt}: interventions[1] is {tname}"),
                json!({"request_type": rt, "interventions": [good_row(kind, name), v]}),
                422,
                "wrong-type",
            ));
        }
        for field in required_fields(kind) {
            let with = |v: Option<Value>| {
                let mut row = good_row(kind, name);
                match v {
                    Some(v) => row.insert((*field).to_string(), v),
                    None => row.remove(*field),
                };
                message(kind, vec![good_row(kind, name), row])
            };
            out.push(Case::json(
                format!("{rt}: {field} missing"),
                with(None),
                422,
                "missing-field",
            ));
            out.push(Case::json(
                format!("{rt}: {field} null"),
                with(Some(Value::Null)),
                422,
                "missing-field",
            ));
            out.push(Case::json(
                format!("{rt}: {field} empty"),
                with(Some(json!(""))),
                422,
                "empty-field",
            ));
            out.push(Case::json(
                format!("{rt}: {field} blank"),
                with(Some(json!(" \t "))),
                422,
                "empty-field",
            ));
            for (tname, v) in type_samples(name) {
                out.push(Case::json(
                    format!("{rt}: {field} is {tname}"),
                    with(Some(v)),
                    422,
                    "wrong-type",
                ));
            }
        }
    }

    // Wrong method / path: JSON errors too.
    let mut c = Case::post("GET instead of POST", Vec::new(), 405, "method-not-allowed");
    c.method = "GET";
    out.push(c);
    let mut c = Case::post(
        "PUT instead of POST",
        good_bytes.clone(),
        405,
        "method-not-allowed",
    );
    c.method = "PUT";
    out.push(c);
    let mut c = Case::post("POST to an unknown path", good_bytes, 404, "not-found");
    c.path = "/dtp/inbox/../admin";
    out.push(c);
    out
}

pub async fn run() -> Vec<Row> {
    let h = Harness::new().await;
    let name = PeopleGenerator::new(66).person().given_name;
    let mut rows = Vec::new();
    for case in cases(&name) {
        let mut request = axum::http::Request::builder()
            .method(case.method)
            .uri(case.path)
            .header("content-type", "application/json");
        if let Some(k) = &case.key {
            request = request.header("x-api-key", k.as_str());
        }
        if let Some(n) = case.declared {
            request = request.header("content-length", n);
        }
        let answer = h.send(request.body(Body::from(case.body)).unwrap()).await;
        let stored = h.stored().await;
        let reason = answer.body["reason"].as_str().unwrap_or("");
        let shape_ok = answer.body.as_object().is_some_and(|o| o.len() == 2) && !reason.is_empty();
        let quotes_value = answer.body.to_string().contains(&name);
        let pass = answer.status == case.status
            && answer.body["error"] == case.code
            && shape_ok
            && !quotes_value
            && stored == 0;
        let observed = format!(
            "{} {}: {}{}{}",
            answer.status,
            answer.body["error"].as_str().unwrap_or("(no error code)"),
            short(reason, 90),
            if stored == 0 {
                "; nothing stored"
            } else {
                "; STORED"
            },
            if quotes_value {
                "; REASON QUOTES A VALUE"
            } else {
                ""
            },
        );
        rows.push(
            Row::new(
                SECTION,
                Kind::BadInput,
                case.name,
                format!("{} {}, JSON reason, nothing stored", case.status, case.code),
            )
            .observed(observed, pass),
        );
    }

    rows.extend(content_rows(&h, &name).await);
    rows.extend(connection_rows(&h, &name).await);

    // Nothing of any refused body reached the database file.
    let leaked = contains_bytes(&h.db_bytes(), &name);
    rows.push(
        Row::new(
            SECTION,
            Kind::BadInput,
            "after every refusal above: database files",
            "no trace of any refused body",
        )
        .observed(
            if leaked {
                "a refused value is in the database"
            } else {
                "no trace"
            },
            !leaked,
        )
        .tried(0),
    );

    // Control: a good message is accepted and stored exactly once, so the
    // "nothing stored" checks above can fail.
    for kind in [
        InboxKind::PrimeroOutgoingReferral,
        InboxKind::PrimeroIncomingReferralDecision,
    ] {
        let before = h.stored().await;
        let body = serde_json::to_vec(&message(kind, vec![good_row(kind, &name)])).unwrap();
        let answer = h.post(Some(API_KEY), body).await;
        let after = h.stored().await;
        let added = after.saturating_sub(before) as u32;
        let pass = answer.status == 202 && answer.body["receipt_id"].is_string() && added == 1;
        rows.push(
            Row::new(
                SECTION,
                Kind::BadInput,
                format!("control: a good {} message", kind.request_type()),
                "202 with a receipt id, stored once",
            )
            .observed(
                format!(
                    "{} {}; {added} stored",
                    answer.status, answer.body["status"]
                ),
                pass,
            )
            .tried(0)
            .lost(u32::from(added == 0))
            .duplicates(added.saturating_sub(1)),
        );
    }
    // The sealed copy does not hold the plain value either.
    let leaked = contains_bytes(&h.db_bytes(), &name);
    rows.push(
        Row::new(
            SECTION,
            Kind::BadInput,
            "control: accepted messages at rest",
            "sealed (no plain personal value in the database)",
        )
        .observed(
            if leaked {
                "plain value found"
            } else {
                "sealed"
            },
            !leaked,
        )
        .tried(0),
    );
    rows
}

/// Issue 14 §3: a NUL character in a field, and a body that is not JSON by
/// its content type.
async fn content_rows(h: &Harness, name: &str) -> Vec<Row> {
    let kind = InboxKind::PrimeroOutgoingReferral;
    let mut row = good_row(kind, name);
    row.insert(
        "individuals.progres_givenname".into(),
        Value::from(format!("{name}\u{0}x")),
    );
    let body = serde_json::to_vec(&message(kind, vec![row])).unwrap();
    let before = h.stored().await;
    let nul = h.post(Some(API_KEY), body.clone()).await;
    let stored = h.stored().await - before;
    let nul_row = Row::new(
        SECTION,
        Kind::BadInput,
        "a NUL character inside a name field (it used to reach Primero)",
        "422 control-character naming the field, nothing stored",
    )
    .observed(
        format!(
            "{} {}: {}; {stored} stored",
            nul.status,
            nul.body["error"],
            short(nul.body["reason"].as_str().unwrap_or(""), 90)
        ),
        nul.status == 422
            && nul.body["error"] == "control-character"
            && nul.body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("progres_givenname") && !r.contains(name))
            && stored == 0,
    );
    let request = axum::http::Request::post(INBOX_PATH)
        .header("x-api-key", API_KEY)
        .header("content-type", "text/plain")
        .body(Body::from(body))
        .unwrap();
    let plain = h.send(request).await;
    let plain_row = Row::new(
        SECTION,
        Kind::BadInput,
        "a good message sent as text/plain",
        "415 unsupported-media-type, nothing stored",
    )
    .observed(
        format!("{} {}", plain.status, plain.body["error"]),
        plain.status == 415 && plain.body["error"] == "unsupported-media-type",
    );
    vec![nul_row, plain_row]
}

/// Issue 14 §3: connections held open without a key. The inbox's own
/// accept loop with a small cap and short deadlines, on loopback.
async fn connection_rows(h: &Harness, name: &str) -> Vec<Row> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const CAP: usize = 16;
    let limits = ConnectionLimits {
        max_connections: CAP,
        header_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(800),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(accept_loop(
        listener,
        router(h.state.clone()),
        limits,
        stop_rx,
    ));
    let mut rows = Vec::new();

    // 3 × the cap of idle connections, no key, no byte sent.
    let mut idle = Vec::new();
    for _ in 0..CAP * 3 {
        if let Ok(c) = tokio::net::TcpStream::connect(addr).await {
            idle.push(c);
        }
    }
    let mut refused = 0;
    let mut kept = Vec::new();
    for mut c in idle {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && String::from_utf8_lossy(&buf[..n]).contains(" 503 ") => {
                refused += 1
            }
            _ => kept.push(c),
        }
    }
    // The idle deadline closes what was kept open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for mut c in kept {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    let body = serde_json::to_vec(&message(
        InboxKind::PrimeroOutgoingReferral,
        vec![good_row(InboxKind::PrimeroOutgoingReferral, name)],
    ))
    .unwrap();
    let good = post_raw(addr, &body).await;
    rows.push(
        Row::new(
            SECTION,
            Kind::Fault,
            format!("{} idle connections without a key (cap {CAP}, idle deadline 0.8 s), then a good message", CAP * 3),
            format!("{} answered 503 at once, the {CAP} within the cap closed at the idle deadline; the good message 202", CAP * 2),
        )
        .observed(
            format!("{refused} answered 503; {closed} closed when idle; then {good}"),
            refused == CAP * 2 && closed == CAP && good == 202,
        ),
    );

    // A request header trickled a byte at a time (slowloris).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut cut_after = None;
    for b in b"POST /dtp/inbox HTTP/1.1\r\nhost: x\r\nx-api-key: "
        .iter()
        .cycle()
        .take(400)
    {
        if slow.write_all(&[*b]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            cut_after = Some(started.elapsed());
            break;
        }
    }
    rows.push(
        Row::new(
            SECTION,
            Kind::Fault,
            "a request header sent a byte every 50 ms (header deadline 0.8 s)",
            "the connection is closed at the header deadline",
        )
        .observed(
            match cut_after {
                Some(t) => format!("closed after {:.1} s", t.as_secs_f64()),
                None => "still open after 20 s".to_string(),
            },
            cut_after.is_some_and(|t| t < Duration::from_secs(5)),
        ),
    );
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    rows
}

/// POST a message over a plain connection; the status answered.
async fn post_raw(addr: std::net::SocketAddr, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut c) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let head = format!(
        "POST {INBOX_PATH} HTTP/1.1\r\nhost: inbox\r\nx-api-key: {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if c.write_all(head.as_bytes()).await.is_err() || c.write_all(body).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

//! Design A transport: the inbox DTP pushes to, the DTP client with mutual
//! TLS against the DTP simulator, and the `bridge` commands `dtp thumbprint`
//! and `inbox serve`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use base64::Engine as _;
use bridge_flows::RunReport;
use bridge_inbox::{
    router, serve, Disposition, HandlerError, InboxHandler, InboxKind, InboxProcessor, InboxState,
    MessageClaim, ServeOptions, DEFAULT_MAX_BODY_BYTES, INBOX_PATH,
};
use bridge_partners::dtp::{DtpClient, DtpEndpoint};
use bridge_partners::{ConnectorError, System};
use bridge_sim::dtp::DtpEndpoint as SimEndpoint;
use bridge_sim::dtp::{
    push_raw_to_inbox, push_to_inbox, referral_message, DtpSim, DtpSimConfig, TestPki,
};
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_sim::ping::SimIntervention;
use bridge_store::{OpenMode, Sealer, SqliteStore, Store};
use bridge_testkit::cli::{sigterm, Streams};
use bridge_testkit::personal::assert_absent;
use serde_json::{json, Value};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

const API_KEY: &str = "inbox-test-api-key-0123456789";
const TODAY: &str = "2025-06-01";

// ---------------------------------------------------------------------------
// In-process inbox
// ---------------------------------------------------------------------------

struct Inbox {
    url: String,
    addr: SocketAddr,
    state: InboxState,
    store: Arc<SqliteStore>,
    sealer: Sealer,
    db: PathBuf,
    _tmp: tempfile::TempDir,
}

async fn inbox() -> Inbox {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("state.db");
    let store = Arc::new(SqliteStore::open(&db, OpenMode::Init).await.unwrap());
    let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let state = InboxState::new(
        store.clone(),
        sealer.clone(),
        API_KEY,
        DEFAULT_MAX_BODY_BYTES,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Inbox {
        url: format!("http://{addr}{INBOX_PATH}"),
        addr,
        state,
        store,
        sealer,
        db,
        _tmp: tmp,
    }
}

fn person(seed: u64) -> Person {
    PeopleGenerator::new(seed).person()
}

fn referral(p: &Person, n: u64) -> Value {
    referral_message(&[SimIntervention::for_person(p.clone(), n)])
}

/// Every file of the SQLite database (main file and write-ahead log).
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Raw HTTP/1.1 exchange, for requests reqwest will not make (a declared
/// length with no body). Writes and reads concurrently.
async fn raw_http(addr: SocketAddr, head: String, body: Vec<u8>) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        // Keep the write half open until the answer is read: closing it
        // would look like an aborted request.
        wr
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if let Some(parsed) = parse_response(&response) {
                    drop(writer);
                    return parsed;
                }
            }
        }
    }
    parse_response(&response).unwrap_or_else(|| {
        panic!(
            "no complete response: {}",
            String::from_utf8_lossy(&response)
        )
    })
}

fn parse_response(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })?;
    (body.len() >= length).then(|| (status, serde_json::from_str(&body[..length]).unwrap()))
}

fn assert_refused(
    what: &str,
    status: u16,
    body: &Value,
    want_status: u16,
    code: &str,
    reason_has: &str,
) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    let reason = body["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no reason in {body}"));
    assert!(
        reason.contains(reason_has),
        "{what}: reason {reason:?} lacks {reason_has:?}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "{what}: only error and reason: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_refuses_every_bad_message_with_a_reason_and_stores_nothing() {
    let inbox = inbox().await;
    let p = person(3);
    // Personal values inside refused bodies must never come back in a reason.
    let name = p.given_name.clone();
    let post = |key: Option<&'static str>, body: Vec<u8>| {
        let url = inbox.url.clone();
        async move {
            let r = push_raw_to_inbox(&url, key, body).await.unwrap();
            (r.status, r.body)
        }
    };
    let json_body = |v: Value| serde_json::to_vec(&v).unwrap();
    let good = referral(&p, 1);

    // 401: no key, wrong key (checked before the body is even read).
    let (s, b) = post(None, json_body(good.clone())).await;
    assert_refused(
        "missing key",
        s,
        &b,
        401,
        "unauthorized",
        "x-api-key header is missing",
    );
    let (s, b) = post(
        Some("inbox-test-api-key-0123456788"),
        json_body(good.clone()),
    )
    .await;
    assert_refused(
        "wrong key",
        s,
        &b,
        401,
        "unauthorized",
        "x-api-key header is not valid",
    );
    let (s, b) = post(Some(""), json_body(good.clone())).await;
    assert_refused("empty key", s, &b, 401, "unauthorized", "not valid");

    // 400: not JSON, not UTF-8, nested too deep.
    let (s, b) = post(
        Some(API_KEY),
        format!("{{\"request_type\": \"{name}").into_bytes(),
    )
    .await;
    assert_refused(
        "malformed JSON",
        s,
        &b,
        400,
        "malformed-json",
        "not valid JSON",
    );
    let (s, b) = post(
        Some(API_KEY),
        b"{\"request_type\": \"Primero\xff\xfe\"}".to_vec(),
    )
    .await;
    assert_refused("invalid UTF-8", s, &b, 400, "invalid-utf8", "UTF-8");
    let deep = format!(
        "{{\"request_type\":\"PrimeroOutgoingReferral\",\"interventions\":{}{}}}",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let (s, b) = post(Some(API_KEY), deep.into_bytes()).await;
    assert_refused(
        "deeply nested",
        s,
        &b,
        400,
        "nesting-too-deep",
        "deeper than",
    );
    // Deep but unbalanced garbage: still an answer, no crash.
    let (s, b) = post(Some(API_KEY), "{\"a\":".repeat(100_000).into_bytes()).await;
    assert_refused(
        "deep unbalanced",
        s,
        &b,
        400,
        "nesting-too-deep",
        "deeper than",
    );

    // 422: routing and required fields.
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "top-level array",
            json!([good.clone()]),
            "wrong-type",
            "body must be a JSON object",
        ),
        (
            "unknown request_type",
            json!({"request_type": name, "interventions": [{"progres_interventionnumber": "1"}]}),
            "unknown-request-type",
            "request_type must be PrimeroOutgoingReferral or PrimeroIncomingReferralDecision",
        ),
        (
            "request_type missing",
            json!({"interventions": [{"progres_interventionnumber": "1"}]}),
            "missing-field",
            "request_type is missing",
        ),
        (
            "request_type not a string",
            json!({"request_type": 7, "interventions": []}),
            "wrong-type",
            "request_type must be a string, not a number",
        ),
        (
            "interventions missing",
            json!({"request_type": "PrimeroOutgoingReferral"}),
            "missing-field",
            "interventions is missing",
        ),
        (
            "interventions null",
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": null}),
            "missing-field",
            "interventions is missing",
        ),
        (
            "interventions not an array",
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": {"progres_interventionnumber": name}}),
            "wrong-type",
            "interventions must be an array, not an object",
        ),
        (
            "interventions empty",
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": []}),
            "empty-field",
            "interventions must not be empty",
        ),
        (
            "intervention not an object",
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": [name]}),
            "wrong-type",
            "interventions[0] must be an object, not a string",
        ),
        (
            "intervention number missing",
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": [{"individuals.progres_givenname": name}]}),
            "missing-field",
            "interventions[0].progres_interventionnumber is missing",
        ),
        (
            "intervention number not a string",
            json!({"request_type": "PrimeroOutgoingReferral",
            "interventions": [{"progres_interventionnumber": "803-24-PRTITV-1"}, {"progres_interventionnumber": 803}]}),
            "wrong-type",
            "interventions[1].progres_interventionnumber must be a string, not a number",
        ),
        (
            "intervention number empty",
            json!({"request_type": "PrimeroOutgoingReferral", "interventions": [{"progres_interventionnumber": ""}]}),
            "empty-field",
            "interventions[0].progres_interventionnumber must not be empty",
        ),
        (
            "org referral id missing",
            json!({"request_type": "PrimeroIncomingReferralDecision",
            "interventions": [{"progres_reviewdecision": "125080000"}]}),
            "missing-field",
            "interventions[0].progres_orgreferralid is missing",
        ),
        (
            "org referral id not a string",
            json!({"request_type": "PrimeroIncomingReferralDecision",
            "interventions": [{"progres_orgreferralid": ["c#abcdef123456"], "progres_reviewdecision": "125080000"}]}),
            "wrong-type",
            "interventions[0].progres_orgreferralid must be a string, not an array",
        ),
        (
            "review decision missing",
            json!({"request_type": "PrimeroIncomingReferralDecision",
            "interventions": [{"progres_orgreferralid": "c#abcdef123456"}]}),
            "missing-field",
            "interventions[0].progres_reviewdecision is missing",
        ),
        (
            "review decision not a string",
            json!({"request_type": "PrimeroIncomingReferralDecision",
            "interventions": [{"progres_orgreferralid": "c#abcdef123456", "progres_reviewdecision": 125080000}]}),
            "wrong-type",
            "interventions[0].progres_reviewdecision must be a string, not a number",
        ),
        (
            "review decision boolean",
            json!({"request_type": "PrimeroIncomingReferralDecision",
            "interventions": [{"progres_orgreferralid": "c#abcdef123456", "progres_reviewdecision": true}]}),
            "wrong-type",
            "interventions[0].progres_reviewdecision must be a string, not a boolean",
        ),
    ];
    for (what, body, code, reason) in cases {
        let (s, b) = post(Some(API_KEY), json_body(body)).await;
        assert_refused(what, s, &b, 422, code, reason);
        assert!(
            !b.to_string().contains(&name),
            "{what}: a reason quotes a value: {b}"
        );
    }

    // 413, declared: answered from the header, the body never sent.
    let head = format!(
        "POST {INBOX_PATH} HTTP/1.1\r\nhost: inbox\r\nx-api-key: {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        DEFAULT_MAX_BODY_BYTES + 1
    );
    let (s, b) = raw_http(inbox.addr, head, Vec::new()).await;
    assert_refused(
        "huge declared body",
        s,
        &b,
        413,
        "body-too-large",
        "larger than 1048576 bytes",
    );
    // 413, undeclared length: the limit applies while reading.
    let mut huge = serde_json::to_vec(&good).unwrap();
    huge.resize(DEFAULT_MAX_BODY_BYTES + 1, b' ');
    let request = axum::http::Request::post(INBOX_PATH)
        .header("x-api-key", API_KEY)
        .header("content-type", "application/json")
        .body(Body::from(huge))
        .unwrap();
    let response = tower::ServiceExt::oneshot(router(inbox.state.clone()), request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let b: Value = serde_json::from_slice(&bytes).unwrap();
    assert_refused(
        "huge streamed body",
        status,
        &b,
        413,
        "body-too-large",
        "larger than",
    );

    // Wrong method and path are JSON errors too.
    let r = reqwest::get(&inbox.url).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method-not-allowed"
    );

    // Nothing of any of it was stored.
    assert!(inbox.store.inbox_pending().await.unwrap().is_empty());
    assert!(!contains(&database_bytes(&inbox.db), &name));
}

/// Answers from a script, and remembers what it was given.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Result<RunReport, HandlerError>>>,
    seen: Mutex<Vec<(InboxKind, String, Value)>>,
    /// When set, each call waits for a release (and says it started).
    gate: Option<(Arc<Notify>, Arc<Notify>)>,
}

impl Scripted {
    fn new(answers: Vec<Result<RunReport, HandlerError>>) -> Self {
        Self {
            answers: Mutex::new(answers.into()),
            ..Self::default()
        }
    }
    fn seen(&self) -> Vec<(InboxKind, String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl InboxHandler for Scripted {
    async fn handle(
        &self,
        kind: InboxKind,
        receipt_id: &str,
        body: &Value,
        _today: &str,
        _claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push((kind, receipt_id.to_string(), body.clone()));
        if let Some((started, release)) = &self.gate {
            started.notify_one();
            release.notified().await;
        }
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(RunReport::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_message_is_sealed_until_processed_then_gone() {
    let inbox = inbox().await;
    let p = person(5);
    let message = referral(&p, 7);
    let sent = serde_json::to_vec(&message).unwrap();

    let r = push_raw_to_inbox(&inbox.url, Some(API_KEY), sent.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "accepted");
    let receipt = r.body["receipt_id"].as_str().unwrap().to_string();
    assert_eq!(r.body.as_object().unwrap().len(), 2);

    // Stored (the 202 came after the write), sealed: no plaintext at rest.
    let pending = inbox.store.inbox_pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, receipt);
    assert_eq!(pending[0].kind, "PrimeroOutgoingReferral");
    for secret in [
        &p.given_name,
        &p.family_name,
        &p.progres_id,
        &p.phone,
        &p.date_of_birth,
    ] {
        assert!(
            !contains(&pending[0].sealed_body, secret),
            "sealed body shows {secret}"
        );
        assert!(
            !contains(&database_bytes(&inbox.db), secret),
            "database shows {secret}"
        );
    }
    assert_eq!(
        inbox
            .sealer
            .open(&receipt, &pending[0].sealed_body)
            .unwrap(),
        sent
    );

    // Retryable: kept, attempt counted. Then done: deleted.
    let handler = Arc::new(Scripted::new(vec![
        Err(HandlerError::Retryable(
            "Primero POST /api/v2/cases unreachable".into(),
        )),
        Ok(RunReport::default()),
    ]));
    let processor = InboxProcessor::new(inbox.store.clone(), inbox.sealer.clone(), handler.clone());
    let first = processor.process_pending(TODAY).await.unwrap();
    assert_eq!(first.kept(), 1, "{first:?}");
    let kept = inbox.store.inbox_pending().await.unwrap();
    assert_eq!((kept.len(), kept[0].attempts), (1, 1));
    let second = processor.process_pending(TODAY).await.unwrap();
    assert_eq!(second.done(), 1, "{second:?}");
    assert_eq!(second.messages[0].previous_attempts, 1);
    assert!(inbox.store.inbox_pending().await.unwrap().is_empty());
    let seen = handler.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, InboxKind::PrimeroOutgoingReferral);
    assert_eq!(seen[0].1, receipt);
    assert_eq!(seen[0].2, message, "the handler gets the body as sent");

    // Permanent: not retried; set aside in the dead letter, sealed.
    let r = push_to_inbox(&inbox.url, API_KEY, &referral(&p, 8))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let handler = Arc::new(Scripted::new(vec![Err(HandlerError::Permanent(
        "no handler".into(),
    ))]));
    let processor = InboxProcessor::new(inbox.store.clone(), inbox.sealer.clone(), handler);
    let s = processor.process_pending(TODAY).await.unwrap();
    assert_eq!(s.dead_lettered(), 1);
    assert!(inbox.store.inbox_pending().await.unwrap().is_empty());
    let dead = inbox.store.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason_code, "permanent");
    let states = inbox.store.inbox_states().await.unwrap();
    assert!(states.contains(&(dead[0].source_id.clone(), "dead".to_string())));
    // Replay makes it pending again.
    assert!(inbox.store.dead_letter_release(dead[0].id).await.unwrap());
    assert!(inbox.store.inbox_revive(&dead[0].source_id).await.unwrap());
    assert_eq!(inbox.store.inbox_pending().await.unwrap().len(), 1);
    let handler = Arc::new(Scripted::new(vec![Ok(RunReport::default())]));
    let processor = InboxProcessor::new(inbox.store.clone(), inbox.sealer.clone(), handler);
    assert_eq!(processor.process_pending(TODAY).await.unwrap().done(), 1);
    assert!(inbox.store.inbox_states().await.unwrap().is_empty());

    // A message sealed under another key is kept, not lost.
    let r = push_to_inbox(&inbox.url, API_KEY, &referral(&p, 9))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let other = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let handler = Arc::new(Scripted::new(vec![]));
    let processor = InboxProcessor::new(inbox.store.clone(), other, handler.clone());
    let s = processor.process_pending(TODAY).await.unwrap();
    assert!(matches!(s.messages[0].disposition, Disposition::Unreadable));
    assert_eq!(inbox.store.inbox_pending().await.unwrap().len(), 1);
    assert!(handler.seen().is_empty());
}

/// Poll the store until no message is pending (gives up after a minute).
async fn wait_until_inbox_empty(store: &SqliteStore) {
    for _ in 0..600 {
        if store.inbox_pending().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for the inbox to empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_processes_on_arrival_retries_and_finishes_the_message_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Init)
            .await
            .unwrap(),
    );
    let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let handler = Arc::new(Scripted {
        answers: Mutex::new(
            vec![
                Err(HandlerError::Retryable(
                    "DTP POST Notification answered HTTP 503".into(),
                )),
                Ok(RunReport::default()),
                Ok(RunReport::default()),
            ]
            .into(),
        ),
        seen: Mutex::default(),
        gate: Some((started.clone(), release.clone())),
    });
    let state = InboxState::new(
        store.clone(),
        sealer.clone(),
        API_KEY,
        DEFAULT_MAX_BODY_BYTES,
    );
    // Short, so the kept message comes back within the test.
    let processor = InboxProcessor::new(store.clone(), sealer, handler.clone())
        .with_retry_delay(Duration::from_millis(50));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{INBOX_PATH}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        state,
        processor,
        ServeOptions {
            today: Some(TODAY.into()),
            sweep: Duration::from_millis(20),
            ..ServeOptions::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));

    let p = person(9);
    // Arrival wakes the worker: no polling interval is involved.
    let r = push_to_inbox(&url, API_KEY, &referral(&p, 1))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    started.notified().await;
    release.notify_one(); // first attempt: Retryable
    started.notified().await; // the retry
    release.notify_one(); // second attempt: Ok
    wait_until_inbox_empty(&store).await;

    // A message in flight when shutdown starts is finished, not abandoned.
    let r = push_to_inbox(&url, API_KEY, &referral(&p, 2))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    started.notified().await;
    stop.send(()).unwrap();
    release.notify_one();
    server.await.unwrap().unwrap();
    assert!(
        store.inbox_pending().await.unwrap().is_empty(),
        "finished and deleted"
    );
    assert_eq!(handler.seen().len(), 3);
    // Stopped: nothing is accepted any more.
    assert!(push_to_inbox(&url, API_KEY, &referral(&p, 3))
        .await
        .is_err());
}

struct Panics;

#[async_trait]
impl InboxHandler for Panics {
    async fn handle(
        &self,
        _kind: InboxKind,
        _receipt_id: &str,
        _body: &Value,
        _today: &str,
        _claim: &MessageClaim,
    ) -> Result<RunReport, HandlerError> {
        panic!("handler bug (expected by the test)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_stops_the_inbox_instead_of_hoarding_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Init)
            .await
            .unwrap(),
    );
    let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let state = InboxState::new(
        store.clone(),
        sealer.clone(),
        API_KEY,
        DEFAULT_MAX_BODY_BYTES,
    );
    let processor = InboxProcessor::new(store.clone(), sealer, Arc::new(Panics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{INBOX_PATH}", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(
        listener,
        state,
        processor,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let r = push_to_inbox(&url, API_KEY, &referral(&person(4), 1))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let e = server.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("worker ended abnormally"), "{e}");
    // The message is still there for the next start.
    assert_eq!(store.inbox_pending().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// DTP client and simulator: mutual TLS
// ---------------------------------------------------------------------------

use bridge_demo::round_trip::dtp_client_config as client_config;

const EXAMPLE_04: &str =
    include_str!("fixtures/examples/04_dtp_success_notification_flowA-1-4.json");
const EXAMPLE_05: &str = include_str!("fixtures/examples/05_dtp_error_notification_flowA-1-3.json");
const EXAMPLE_07: &str =
    include_str!("fixtures/examples/07_dtp_decision_from_primero_flowA-1-2.json");
const EXAMPLE_10: &str = include_str!("fixtures/examples/10_dtp_outbound_referral_flowA-2-2.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtp_client_with_the_pinned_certificate_reaches_every_endpoint() {
    let pki = TestPki::generate();
    let mut config = DtpSimConfig::new(&pki);
    config.pinned_thumbprint = Some(pki.client_thumbprint());
    let sim = DtpSim::start_loopback(config).await.unwrap();
    let client = DtpClient::new(client_config(&pki, &sim)).unwrap();

    let bodies = [
        (DtpEndpoint::ReceiveIncomingReferral, EXAMPLE_10),
        (DtpEndpoint::ReceiveDecisionOutgoingReferral, EXAMPLE_07),
        (DtpEndpoint::Notification, EXAMPLE_04),
        (DtpEndpoint::Notification, EXAMPLE_05),
    ];
    for (endpoint, text) in bodies {
        let body: Value = serde_json::from_str(text).unwrap();
        client.post(endpoint, &body).await.unwrap();
    }
    let received = sim.received();
    assert_eq!(received.len(), 4);
    for (got, (endpoint, text)) in received.iter().zip(bodies) {
        assert_eq!(got.endpoint.name(), endpoint.name());
        assert_eq!(got.body, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(
            got.client_thumbprint.as_deref(),
            Some(pki.client_thumbprint().as_str())
        );
    }
    // The endpoint checks the body's request_type.
    let e = client
        .post(
            DtpEndpoint::ReceiveIncomingReferral,
            &serde_json::from_str::<Value>(EXAMPLE_07).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_from_another_ca_is_refused() {
    let pki = TestPki::generate();
    let sim = DtpSim::start_loopback(DtpSimConfig::new(&pki))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(EXAMPLE_04).unwrap();

    // No client certificate at all: the handshake fails.
    let bare = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = bare
        .post(sim.url(SimEndpoint::Notification))
        .header("Ocp-Apim-Subscription-Key", &sim.config().subscription_key)
        .json(&body)
        .send()
        .await;
    assert!(
        r.is_err(),
        "a client without a certificate got {:?}",
        r.map(|r| r.status())
    );

    // A certificate from another CA: refused the same way.
    let stranger = TestPki::generate();
    let mut config = client_config(&pki, &sim);
    config.client_cert_pem = stranger.client_cert_pem.clone().into_bytes();
    config.client_key_pem = stranger.client_key_pem.clone().into_bytes();
    let e = DtpClient::new(config)
        .unwrap()
        .post(DtpEndpoint::Notification, &body)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectorError::Transport { system: System::Dtp, endpoint, .. } if endpoint == "POST Notification"),
        "{e:?}"
    );

    // The client does not trust a server its roots do not vouch for.
    let mut config = client_config(&pki, &sim);
    config.extra_root_pem = None;
    let e = DtpClient::new(config)
        .unwrap()
        .post(DtpEndpoint::Notification, &body)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Transport { .. }), "{e:?}");

    assert!(sim.received().is_empty());
    assert!(sim.requests().is_empty(), "no request got past TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_subscription_key_and_faults_name_system_endpoint_and_status_only() {
    let pki = TestPki::generate();
    let sim = DtpSim::start_loopback(DtpSimConfig::new(&pki))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(EXAMPLE_10).unwrap();
    let wrong_key = "wrong-subscription-key-4f1e9a";
    let mut config = client_config(&pki, &sim);
    config.subscription_key = wrong_key.into();
    let e = DtpClient::new(config)
        .unwrap()
        .post(DtpEndpoint::ReceiveIncomingReferral, &body)
        .await
        .unwrap_err();
    match &e {
        ConnectorError::Status {
            system,
            endpoint,
            status,
            ..
        } => {
            assert_eq!(*system, System::Dtp);
            assert_eq!(endpoint, "POST ReceiveIncomingReferral");
            assert_eq!(*status, 401);
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("DTP POST ReceiveIncomingReferral answered HTTP 401"),
        "{text}"
    );
    for leak in [
        wrong_key,
        sim.config().subscription_key.as_str(),
        "127.0.0.1",
        "primero-uat",
        "Sample",
    ] {
        assert!(!text.contains(leak), "{text} shows {leak}");
        assert!(!format!("{e:?}").contains(leak), "{e:?} shows {leak}");
    }
    assert!(!e.is_transient());

    // Injected 503: a transient status error; the next call goes through.
    // (Without the client's own retries, to see the error itself.)
    let client = DtpClient::new(client_config(&pki, &sim))
        .unwrap()
        .with_retry(bridge_partners::RetryPolicy::none());
    sim.fail_next("/primero-uat/ReceiveIncomingReferral", 503, 1);
    let e = client
        .post(DtpEndpoint::ReceiveIncomingReferral, &body)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert!(e.is_transient());
    client
        .post(DtpEndpoint::ReceiveIncomingReferral, &body)
        .await
        .unwrap();
    assert_eq!(sim.bodies(SimEndpoint::ReceiveIncomingReferral), vec![body]);
}

// ---------------------------------------------------------------------------
// The `bridge` binary
// ---------------------------------------------------------------------------

/// SHA-1 over the DER of the first certificate, computed here independently.
fn expected_thumbprint(pem: &str) -> String {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    sha1::Sha1::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[test]
fn bridge_dtp_thumbprint_prints_the_sha1_of_the_certificate() {
    let pki = TestPki::generate();
    let tmp = tempfile::tempdir().unwrap();
    let files = pki.write_files(tmp.path()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["dtp", "thumbprint", "--cert"])
        .arg(&files.client_cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), expected_thumbprint(&pki.client_cert_pem));
    assert_eq!(printed.trim().len(), 40);

    // A key file is not a certificate: a named error, and no key material shown.
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["dtp", "thumbprint", "--cert"])
        .arg(&files.client_key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dtp-client.key") && err.contains("CERTIFICATE"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY-----"), "{err}");
}

const JOBS: [&str; 2] = ["dtp-1.1", "dtp-2.3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_inbox_serve_refuses_to_start_without_a_seal_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        "[state]\npath = \"state.db\"\n[primero]\nbase_url = \"http://127.0.0.1:9\"\nuser_name = \"u\"\npassword = { env = \"BRIDGE_TEST_PRIMERO_PASSWORD\" }\n[jobs]\ndir = \"jobs\"\nmappings = \"m\"\n[inbox]\nlisten = \"127.0.0.1:0\"\napi_key = { env = \"BRIDGE_TEST_INBOX_API_KEY\" }\nseal_key = { env = \"BRIDGE_TEST_INBOX_SEAL_KEY_UNSET\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["inbox", "serve", "--init", "--config"])
        .arg(&config)
        .env("BRIDGE_TEST_INBOX_API_KEY", API_KEY)
        .env_remove("BRIDGE_TEST_INBOX_SEAL_KEY_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("inbox.seal_key") && err.contains("BRIDGE_TEST_INBOX_SEAL_KEY_UNSET"),
        "{err}"
    );
    assert!(
        !tmp.path().join("state.db").exists(),
        "refused before touching state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_inbox_serve_end_to_end_referral_notified_and_stops_on_sigterm() {
    let project = bridge_runtime::toolchain::ProjectDirs::locate().expect("project folder");
    project
        .build_jobs(&JOBS.map(String::from))
        .expect("jobs build");
    let tmp = tempfile::tempdir().unwrap();
    let jobs_dir = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    for job in JOBS {
        std::fs::copy(project.job_wasm(job), jobs_dir.join(format!("{job}.wasm"))).unwrap();
    }

    let primero_config = bridge_sim::primero::PrimeroSimConfig::default();
    let primero = bridge_sim::primero::PrimeroSim::new(primero_config.clone())
        .start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let pki = TestPki::generate();
    let mut dtp_config = DtpSimConfig::new(&pki);
    dtp_config.pinned_thumbprint = Some(pki.client_thumbprint());
    let dtp = DtpSim::start_loopback(dtp_config).await.unwrap();
    let files = pki.write_files(tmp.path()).unwrap();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\npath = \"state.db\"\n\n[primero]\nbase_url = \"{}\"\nauth = \"basic\"\nuser_name = \"{}\"\npassword = {{ env = \"BRIDGE_PRIMERO_PASSWORD\" }}\n\n[jobs]\ndir = \"jobs\"\nmappings = \"{}\"\nallow_placeholders = true\n\n{}\n[inbox]\nlisten = \"127.0.0.1:0\"\napi_key = {{ env = \"BRIDGE_INBOX_API_KEY\" }}\nseal_key = {{ env = \"BRIDGE_INBOX_SEAL_KEY\" }}\n",
            primero.base_url(),
            primero_config.user_name,
            project.mappings("ethiopia-gambella").display(),
            dtp.config_toml(&files, "BRIDGE_DTP_SUBSCRIPTION_KEY"),
        ),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["inbox", "serve", "--init", "--today", TODAY, "--config"])
        .arg(&config)
        .env("BRIDGE_LOG", "debug")
        .env("BRIDGE_PRIMERO_PASSWORD", &primero_config.password)
        .env(
            "BRIDGE_DTP_SUBSCRIPTION_KEY",
            &dtp.config().subscription_key,
        )
        .env("BRIDGE_INBOX_API_KEY", API_KEY)
        .env("BRIDGE_INBOX_SEAL_KEY", Sealer::generate_key_hex())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Both streams are read on threads of their own; stdout names the URL.
    let streams = Streams::read(&mut child);
    let url = tokio::task::block_in_place(|| {
        streams.wait_for("inbox listening on ", Duration::from_secs(120))
    });
    let Some(url) = url else {
        let _ = child.kill();
        let _ = child.wait();
        let (_, stderr) = streams.finish();
        panic!("the inbox did not start:\n{stderr}");
    };

    // Refused at the door; accepted when right.
    let p = person(21);
    let intervention = SimIntervention::for_person(p.clone(), 21);
    let message = referral_message(std::slice::from_ref(&intervention));
    let r = push_to_inbox(&url, "not-the-inbox-key-at-all", &message)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = push_to_inbox(&url, API_KEY, &message).await.unwrap();
    assert_eq!(r.status, 202, "{}", r.body);

    // Flow 1-1 runs on arrival: a case in Primero, a success notification to DTP.
    let notified = || !dtp.bodies(SimEndpoint::Notification).is_empty();
    for _ in 0..1200 {
        if notified() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !notified() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
        let (_, stderr) = streams.finish();
        panic!(
            "no notification reached DTP; DTP saw {:?}\nstderr:\n{stderr}",
            dtp.requests(),
        );
    }
    let notification = &dtp.bodies(SimEndpoint::Notification)[0];
    assert_eq!(
        notification["status"], "Pending Acknowledgement",
        "{notification}"
    );
    assert_eq!(
        notification["progres_interventionnumber"],
        intervention.intervention_number.as_str()
    );
    assert_eq!(
        dtp.received()[0].client_thumbprint.as_deref(),
        Some(pki.client_thumbprint().as_str())
    );
    let cases = primero.sim().find_by_individual_no(&p.progres_id);
    assert_eq!(cases.len(), 1, "one case for the referred child");

    // Processed messages leave the inbox.
    let store = SqliteStore::open(&tmp.path().join("state.db"), OpenMode::Existing)
        .await
        .unwrap();
    wait_until_inbox_empty(&store).await;
    drop(store);

    // SIGTERM: stop accepting, finish, exit 0.
    sigterm(pid);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = streams.finish();
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("inbox stopped"), "{stdout}");

    // No personal data in anything the bridge printed or logged.
    let output = format!("{stdout}\n{stderr}");
    assert_absent("bridge inbox serve's output", &output, p.personal_data());
    assert!(!output.contains(API_KEY));
    assert!(!database_bytes(&tmp.path().join("state.db"))
        .windows(p.given_name.len())
        .any(|w| w == p.given_name.as_bytes()));
}

//! Property tests run through proptest's `TestRunner` with a fixed seed (the
//! same inputs on every CI run), each call inside `catch_unwind`: no panic on
//! any input, and the answer keeps its promises.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bridge_flows::rows::{bundle_for_delivery, group_intervention_rows, Row as JoinRow};
use bridge_inbox::validate::{required_fields, validate};
use bridge_inbox::InboxKind;
use bridge_inbox::{router, InboxState, DEFAULT_MAX_BODY_BYTES, INBOX_PATH};
use bridge_mappings::MappingSet;
use bridge_partners::ping::parse_check_status;
use bridge_store::{OpenMode, Sealer, SqliteStore, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::Value;

use super::support::panic_text;
use super::{Kind, Row};

const SECTION: &str = "properties";

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

fn leaf(vocab: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "\\PC{0,24}".prop_map(Value::from),
        "[{}\\[\\]\":,\\\\ a-z]{0,24}".prop_map(Value::from),
        prop::sample::select(vocab).prop_map(Value::from),
    ]
    .boxed()
}

fn key(vocab: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vocab).prop_map(str::to_string),
        "[A-Za-z_.]{0,16}",
    ]
    .boxed()
}

/// Arbitrary JSON, biased towards the keys and values the parser looks at.
fn json(vocab: &'static [&'static str]) -> BoxedStrategy<Value> {
    leaf(vocab)
        .prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((key(vocab), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Valid JSON text, then cut, a byte changed, or a byte inserted.
fn mutated(base: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (base, any::<prop::sample::Index>(), any::<u8>(), 0u8..3)
        .prop_map(|(mut bytes, at, b, how)| {
            if bytes.is_empty() {
                return bytes;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes.truncate(i),
                1 => bytes[i] = b,
                _ => bytes.insert(i, b),
            }
            bytes
        })
        .boxed()
}

fn to_bytes(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// Runs `check` on `cases` inputs; a panic or a broken promise fails the row.
fn property<S: Strategy>(
    case: &str,
    expected: &str,
    cases: u32,
    strategy: S,
    labels: [&str; 2],
    check: impl Fn(S::Value) -> Result<bool, String>,
) -> Row
where
    S::Value: std::fmt::Debug,
{
    let tried = Cell::new(0u64);
    let accepted = Cell::new(0u64);
    let panics = Cell::new(0u64);
    let mut r = runner(cases);
    let result = r.run(&strategy, |input| {
        tried.set(tried.get() + 1);
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(Ok(ok)) => {
                if ok {
                    accepted.set(accepted.get() + 1);
                }
                Ok(())
            }
            Ok(Err(broken)) => Err(TestCaseError::fail(broken)),
            Err(p) => {
                panics.set(panics.get() + 1);
                Err(TestCaseError::fail(format!("panic: {}", panic_text(&*p))))
            }
        }
    });
    let row = Row::new(SECTION, Kind::BadInput, case, expected).tried(tried.get());
    match result {
        Ok(()) => row.observed(
            format!(
                "{} random inputs, 0 panics ({} {}, {} {})",
                cases,
                accepted.get(),
                labels[0],
                u64::from(cases) - accepted.get().min(u64::from(cases)),
                labels[1]
            ),
            true,
        ),
        Err(TestError::Fail(why, input)) => {
            let shown = format!("{input:?}");
            row.observed(
                format!(
                    "failed ({} panics): {why}; minimal input: {}",
                    panics.get(),
                    crate::fault_matrix::support::short(&shown, 120)
                ),
                false,
            )
        }
        Err(TestError::Abort(why)) => row.observed(format!("aborted: {why}"), false),
    }
}

const INBOX_VOCAB: &[&str] = &[
    "request_type",
    "interventions",
    "PrimeroOutgoingReferral",
    "PrimeroIncomingReferralDecision",
    "progres_interventionnumber",
    "progres_orgreferralid",
    "progres_reviewdecision",
    "",
    " ",
];

fn inbox_bodies() -> BoxedStrategy<Vec<u8>> {
    let shaped = (
        prop::sample::select(&INBOX_VOCAB[2..4]),
        prop::collection::vec(
            prop::collection::vec(
                (prop::sample::select(&INBOX_VOCAB[4..7]), json(INBOX_VOCAB)),
                0..4,
            ),
            0..4,
        ),
    )
        .prop_map(|(rt, rows)| {
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
                .collect();
            to_bytes(serde_json::json!({"request_type": rt, "interventions": rows}))
        })
        .boxed();
    // Valid messages with random extra fields (and, mutated, almost valid).
    let valid = (
        any::<bool>(),
        prop::collection::vec(
            (
                prop::collection::vec("[A-Za-z0-9#,-]{1,16}", 2),
                prop::collection::vec((key(INBOX_VOCAB), json(INBOX_VOCAB)), 0..4),
            ),
            1..4,
        ),
    )
        .prop_map(|(decision, rows)| {
            let kind = if decision {
                InboxKind::PrimeroIncomingReferralDecision
            } else {
                InboxKind::PrimeroOutgoingReferral
            };
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|(values, extra)| {
                    let mut row: serde_json::Map<String, Value> = extra
                        .into_iter()
                        .filter(|(k, _)| !required_fields(kind).contains(&k.as_str()))
                        .collect();
                    for (field, value) in required_fields(kind).iter().zip(values) {
                        row.insert((*field).to_string(), Value::from(value));
                    }
                    Value::Object(row)
                })
                .collect();
            to_bytes(
                serde_json::json!({"request_type": kind.request_type(), "interventions": rows}),
            )
        })
        .boxed();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json(INBOX_VOCAB).prop_map(to_bytes),
        shaped.clone(),
        mutated(shaped),
        valid.clone(),
        mutated(valid),
        mutated(json(INBOX_VOCAB).prop_map(to_bytes).boxed()),
        ("[\\[{]{0,80}", "[\\]}]{0,80}").prop_map(|(a, b)| format!("{a}{b}").into_bytes()),
    ]
    .boxed()
}

fn inbox_parser() -> Row {
    let strategy = inbox_bodies();
    property(
        "inbox parser (`validate`)",
        "no panic; every refusal is 4xx with a code and a reason",
        2_000,
        strategy,
        ["accepted", "refused"],
        |body| match validate(&body) {
            Ok(_) => Ok(true),
            Err(r) if r.status.is_client_error() && !r.code.is_empty() && !r.reason.is_empty() => {
                Ok(false)
            }
            Err(r) => Err(format!("refusal without 4xx/code/reason: {r:?}")),
        },
    )
}

/// The whole `POST /dtp/inbox` path on random bodies: every answer is 202 or
/// a 4xx with a JSON reason, and the store holds exactly one message per 202.
fn inbox_router() -> Row {
    const KEY: &str = "fault-matrix-property-key-0123";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(&tmp.path().join("s.db"), OpenMode::Init))
            .unwrap(),
    );
    let sealer = Sealer::from_hex(&Sealer::generate_key_hex()).unwrap();
    let state = InboxState::new(store.clone(), sealer, KEY, DEFAULT_MAX_BODY_BYTES);
    let accepted = Cell::new(0usize);
    property(
        "inbox endpoint (`POST /dtp/inbox`, through the router and the store)",
        "no 5xx; 202 or 4xx with a JSON reason; one stored message per 202, none per refusal",
        400,
        inbox_bodies(),
        ["answered 202", "answered 4xx"],
        |body| {
            let (status, answer) = rt.block_on(async {
                let request = axum::http::Request::post(INBOX_PATH)
                    .header("x-api-key", KEY)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap();
                let response = tower::ServiceExt::oneshot(router(state.clone()), request)
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                (
                    status,
                    serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
                )
            });
            if status == 202 {
                accepted.set(accepted.get() + 1);
            } else if !(400..500).contains(&status) || !answer["reason"].is_string() {
                return Err(format!("answered {status} {answer}"));
            }
            let stored = rt.block_on(store.inbox_states()).unwrap().len();
            if stored != accepted.get() {
                return Err(format!(
                    "{stored} messages stored after {} accepted",
                    accepted.get()
                ));
            }
            Ok(status == 202)
        },
    )
}

const PING_VOCAB: &[&str] = &[
    "Status",
    "status",
    "Message",
    "Data",
    "DATA",
    "ErrorMessage",
    "Success",
    "Failed",
    "No Data Found",
    "progres_interoperabilityreferralid",
];

fn ping_check_status() -> Row {
    // PING's quirk: an object written into a string without escaping.
    let embedded = (json(PING_VOCAB), prop::sample::select(PING_VOCAB))
        .prop_map(|(inner, k)| {
            format!(
                "{{\"Data\":\"[{{\\\"{k}\\\":\\\"x\\\",\\\"Data\\\":\"{}\"}}]\"}}",
                inner
            )
            .into_bytes()
        })
        .boxed();
    let unescaped = (json(PING_VOCAB), json(PING_VOCAB))
        .prop_map(|(a, b)| {
            format!("{{\"Status\":\"Success\",\"Data\":\"{a}\",\"Message\":\"{b}\"}}").into_bytes()
        })
        .boxed();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json(PING_VOCAB).prop_map(to_bytes),
        embedded.clone(),
        unescaped.clone(),
        mutated(embedded),
        mutated(unescaped),
        "[\"{\\[\\]}:,\\\\ ]{0,200}".prop_map(String::into_bytes),
    ];
    property(
        "PING check-status parser (`parse_check_status`)",
        "no panic; statuses or a typed error",
        3_000,
        strategy,
        ["parsed", "a typed error"],
        |body| Ok(parse_check_status(&body).is_ok()),
    )
}

const ROW_KEYS: &[&str] = &[
    "progres_interventionnumber",
    "progres_interventionname",
    "progres_language.progres_languagecodeidname",
    "progres_specificneed.progres_spncategory2name",
    "progres_specificneed.progres_spnsubcategory2name",
    "progres_specificneed.specificneeds.progres_spncategory2",
    "progres_specificneed.specificneeds.progres_spnsubcategory2",
    "X-1",
    "X-2",
    "Nuer",
];

fn join_row() -> BoxedStrategy<JoinRow> {
    prop::collection::vec(
        (
            prop::sample::select(ROW_KEYS),
            prop_oneof![
                3 => prop::sample::select(&ROW_KEYS[7..]).prop_map(Value::from),
                1 => json(ROW_KEYS),
            ],
        ),
        0..8,
    )
    .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    .boxed()
}

fn join_rows() -> Row {
    let strategy = (prop::collection::vec(join_row(), 0..12), join_row());
    let mut row = property(
        "join-row de-duplication (`group_intervention_rows`, `bundle_for_delivery`)",
        "no panic; distinct languages and needs; rows sent twice give the same bundles",
        1_500,
        strategy,
        ["grouped", "empty"],
        |(rows, delivery)| {
            let groups = group_intervention_rows(&rows);
            if groups.len() > rows.len() {
                return Err(format!("{} groups from {} rows", groups.len(), rows.len()));
            }
            for (_, langs, needs) in &groups {
                let mut l = langs.clone();
                l.sort();
                l.dedup();
                if l.len() != langs.len() {
                    return Err("a language appears twice".into());
                }
                for (i, n) in needs.iter().enumerate() {
                    if needs[..i].contains(n) {
                        return Err("a specific need appears twice".into());
                    }
                }
            }
            let twice: Vec<JoinRow> = rows.iter().chain(rows.iter()).cloned().collect();
            if group_intervention_rows(&twice) != groups {
                return Err("the same rows sent twice give other groups (a duplicate)".into());
            }
            let bundle = bundle_for_delivery(&delivery, &rows);
            if bundle.is_some() == rows.is_empty() {
                return Err("a bundle without rows, or no bundle with rows".into());
            }
            Ok(!groups.is_empty())
        },
    );
    row.duplicates = 0;
    row
}

const TOML_LINES: &[&str] = &[
    "description = \"x\"",
    "default = \"language6\"",
    "values = [\"a\", \"b\"]",
    "keys = [\"a\", \"Nuer\"]",
    "[map]",
    "[deployment]",
    "country = \"Testland\"",
    "design = \"ping\"",
    "design = \"dtp\"",
    "[shipping_processes]",
    "pending_referrals = \"SHP-1\"",
    "\"a\" = \"b\"",
    "\"a\" = \"\"",
    "\"\" = \"b\"",
    "a = 1",
    "map = 3",
    "[[map]]",
    "x = { y = [1, {z = 2}] }",
    "\"Nuer\" = \"\"\"multi\nline\"\"\"",
];

/// A TOML basic-string key (escapes quotes, backslashes and controls).
fn toml_key(k: &str) -> String {
    let mut out = String::from("\"");
    for c in k.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn mapping_loader() -> Row {
    let text = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(TOML_LINES).prop_map(str::to_string),
                1 => "\\PC{0,30}",
                1 => "[\\[\\]\"={}a-z ,.0-9]{0,30}",
            ],
            0..10,
        )
        .prop_map(|lines| lines.join("\n").into_bytes()),
        // Well-formed tables with odd contents, to reach the checks after parsing.
        (
            prop::option::of("[a-z0-9 ]{0,8}"),
            prop::option::of(prop::collection::vec("[a-z0-9]{0,4}", 0..4)),
            prop::collection::vec(("\\PC{0,8}", "[a-z0-9 ]{0,6}"), 0..6),
        )
            .prop_map(|(default, values, pairs)| {
                let mut t = String::from("description = \"fuzz\"\n");
                if let Some(d) = default {
                    t.push_str(&format!("default = {d:?}\n"));
                }
                if let Some(v) = values {
                    t.push_str(&format!("values = {v:?}\n"));
                }
                t.push_str("[map]\n");
                for (k, v) in pairs {
                    t.push_str(&format!("{} = {v:?}\n", toml_key(&k)));
                }
                t.into_bytes()
            }),
    ]
    .boxed();
    let strategy = (text, any::<bool>());
    let tmp = tempfile::tempdir().unwrap();
    let n = Cell::new(0u32);
    property(
        "mapping loader (`MappingSet::load_dir`)",
        "no panic; every error names the file",
        600,
        strategy,
        ["loaded", "refused with an error"],
        |(bytes, as_deployment)| {
            n.set(n.get() + 1);
            let dir = tmp.path().join(format!("m{}", n.get()));
            std::fs::create_dir_all(&dir).unwrap();
            let name = if as_deployment {
                "deployment.toml"
            } else {
                "languages.toml"
            };
            if !as_deployment {
                std::fs::write(
                    dir.join("deployment.toml"),
                    "[deployment]\ncountry = \"T\"\ndesign = \"ping\"\n",
                )
                .unwrap();
            }
            let file = dir.join(name);
            std::fs::write(&file, &bytes).unwrap();
            let result = MappingSet::load_dir(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            match result {
                Ok(_) => Ok(true),
                Err(e)
                    if e.to_string().contains(&file.display().to_string())
                        || (as_deployment && e.to_string().contains("deployment.toml")) =>
                {
                    Ok(false)
                }
                Err(e) => Err(format!("error does not name the file: {e}")),
            }
        },
    )
}

pub fn run() -> Vec<Row> {
    // A panic inside a checked call is reported in the row; keep the default
    // hook quiet meanwhile so the test output stays readable.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let rows = vec![
        inbox_parser(),
        inbox_router(),
        mapping_loader(),
        ping_check_status(),
        join_rows(),
    ];
    std::panic::set_hook(hook);
    rows
}

//! Invalid config and mapping files: each error names the file, the line and
//! the key. Cases are data: to cover a new config section, add a line to
//! [`config_cases`].

use std::path::Path;

use bridge_service::config::BridgeConfig;

use super::support::short;
use super::{Kind, Row};

const SECTION: &str = "config";

/// A valid bridge.toml the cases edit.
pub const BASE: &str = r#"[state]
path = "state.db"

[primero]
base_url = "http://127.0.0.1:1"
user_name = "u"
password = { env = "BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD" }

[jobs]
dir = "jobs"
mappings = "mappings"
"#;

/// One invalid file: its text, the key the error must name, and the line
/// (found as the first line holding `at`).
pub struct FileCase {
    pub name: String,
    pub text: Vec<u8>,
    pub key: String,
    pub at: Option<String>,
    /// A secret value written in the file: the error must not show it.
    pub secret: Option<String>,
}

impl FileCase {
    pub fn new(name: &str, text: impl Into<Vec<u8>>, key: &str, at: Option<&str>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            key: key.into(),
            at: at.map(str::to_string),
            secret: None,
        }
    }

    /// The case writes `value` as a secret: the error must not show it.
    pub fn secret(mut self, value: &str) -> Self {
        self.secret = Some(value.into());
        self
    }

    /// The 1-based line the error must name.
    pub fn line(&self) -> Option<usize> {
        let text = String::from_utf8_lossy(&self.text);
        let at = self.at.as_deref()?;
        text.lines().position(|l| l.contains(at)).map(|i| i + 1)
    }
}

/// `BASE` with `find` replaced by `with` (which must occur).
fn edit(find: &str, with: &str) -> String {
    assert!(BASE.contains(find), "BASE lacks {find:?}");
    BASE.replacen(find, with, 1)
}

/// `text` with its `@@` replaced by bytes that are not UTF-8.
pub fn not_utf8(text: &str) -> Vec<u8> {
    let at = text.find("@@").expect("marker");
    let mut bytes = text.as_bytes()[..at].to_vec();
    bytes.extend([0xff, 0xfe]);
    bytes.extend(&text.as_bytes()[at + 2..]);
    bytes
}

/// A `[ping]` section, its secrets from the environment.
const PING: &str = r#"[ping]
base_url = "http://127.0.0.1:1"
token_url = "http://127.0.0.1:1/token"
username = "u"
password = { env = "BRIDGE_FAULT_MATRIX_PING_PASSWORD" }
client_id = "c"
subscription_key = { env = "BRIDGE_FAULT_MATRIX_PING_KEY" }
"#;

/// An `[inbox]` section, its secrets from the environment.
const INBOX: &str = r#"[inbox]
listen = "127.0.0.1:0"
api_key = { env = "BRIDGE_FAULT_MATRIX_INBOX_KEY" }
seal_key = { env = "BRIDGE_FAULT_MATRIX_SEAL_KEY" }
"#;

pub fn config_cases() -> Vec<FileCase> {
    vec![
        FileCase::new(
            "unknown key in [primero]",
            edit(
                "user_name = \"u\"\n",
                "user_name = \"u\"\ncolour = \"blue\"\n",
            ),
            "colour",
            Some("colour"),
        ),
        FileCase::new(
            "unknown top-level section",
            format!("{BASE}\n[primer]\nx = 1\n"),
            "primer",
            Some("[primer]"),
        ),
        FileCase::new(
            "misspelt key (base_ur)",
            edit("base_url =", "base_ur ="),
            "base_ur",
            Some("base_ur"),
        ),
        FileCase::new(
            "wrong type: timeout_secs is a string",
            edit(
                "user_name = \"u\"\n",
                "user_name = \"u\"\ntimeout_secs = \"thirty\"\n",
            ),
            "timeout_secs",
            Some("timeout_secs"),
        ),
        FileCase::new(
            "wrong type: base_url is a number",
            edit("base_url = \"http://127.0.0.1:1\"", "base_url = 5"),
            "base_url",
            Some("base_url"),
        ),
        FileCase::new(
            "wrong type: password is a plain string",
            edit(
                "password = { env = \"BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD\" }",
                "password = \"hunter2\"",
            ),
            "password",
            Some("password"),
        )
        .secret("hunter2"),
        FileCase::new(
            "wrong type: password is a number",
            edit(
                "password = { env = \"BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD\" }",
                "password = 8675309123",
            ),
            "password",
            Some("password"),
        )
        .secret("8675309123"),
        FileCase::new(
            "inline secret: ping.password",
            format!("{BASE}\n{PING}").replace(
                "password = { env = \"BRIDGE_FAULT_MATRIX_PING_PASSWORD\" }",
                "password = \"ping-pass-4417\"",
            ),
            "password",
            Some("ping-pass-4417"),
        )
        .secret("ping-pass-4417"),
        FileCase::new(
            "inline secret: ping.subscription_key",
            format!("{BASE}\n{PING}").replace(
                "{ env = \"BRIDGE_FAULT_MATRIX_PING_KEY\" }",
                "\"sub-key-5521\"",
            ),
            "subscription_key",
            Some("sub-key-5521"),
        )
        .secret("sub-key-5521"),
        FileCase::new(
            "inline secret: inbox.api_key",
            format!("{BASE}\n{INBOX}").replace(
                "{ env = \"BRIDGE_FAULT_MATRIX_INBOX_KEY\" }",
                "\"inbox-key-0123456789\"",
            ),
            "api_key",
            Some("inbox-key-0123456789"),
        )
        .secret("inbox-key-0123456789"),
        FileCase::new(
            "wrong type: [jobs] is an array",
            format!(
                "jobs = [1, 2]\n{}",
                edit("[jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n", "")
            ),
            "jobs",
            Some("jobs ="),
        ),
        FileCase::new(
            "wrong type: negative timeout",
            edit(
                "user_name = \"u\"\n",
                "user_name = \"u\"\ntimeout_secs = -1\n",
            ),
            "timeout_secs",
            Some("timeout_secs"),
        ),
        FileCase::new(
            "unknown key in a secret",
            edit(
                "{ env = \"BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD\" }",
                "{ value = \"hunter2\" }",
            ),
            "value",
            Some("password"),
        ),
        FileCase::new(
            "missing required key: primero.user_name",
            edit("user_name = \"u\"\n", ""),
            "user_name",
            Some("[primero]"),
        ),
        FileCase::new(
            "missing required section: [jobs]",
            edit("[jobs]\ndir = \"jobs\"\nmappings = \"mappings\"\n", ""),
            "jobs",
            Some("[state]"),
        ),
        FileCase::new(
            "bad TOML syntax: unterminated string",
            edit(
                "base_url = \"http://127.0.0.1:1\"",
                "base_url = \"http://127.0.0.1:1",
            ),
            "base_url",
            Some("base_url"),
        ),
        FileCase::new(
            "bad TOML syntax: missing value",
            edit("user_name = \"u\"", "user_name ="),
            "user_name",
            Some("user_name"),
        ),
        FileCase::new(
            "bad TOML syntax: duplicate key",
            edit(
                "user_name = \"u\"\n",
                "user_name = \"u\"\nuser_name = \"v\"\n",
            ),
            "user_name",
            Some("user_name = \"v\""),
        ),
        FileCase::new(
            "bad TOML syntax: unclosed table header",
            edit("[jobs]", "[jobs"),
            "jobs",
            Some("[jobs"),
        ),
        FileCase::new("empty file", "", "primero", None),
        FileCase::new(
            "not UTF-8",
            not_utf8(&edit("user_name = \"u\"", "user_name = \"@@\"")),
            "user_name",
            Some("user_name"),
        ),
        FileCase::new(
            "invalid cron expression",
            format!("{BASE}\n[schedule]\n\"ping-1.1\" = \"every tuesday\"\n"),
            "ping-1.1",
            Some("every tuesday"),
        ),
        FileCase::new(
            "schedule names an unknown flow",
            format!("{BASE}\n[schedule]\n\"ping-9.9\" = \"0 */5 * * * *\"\n"),
            "ping-9.9",
            Some("ping-9.9"),
        ),
    ]
}

/// Files that parse but would break the service: `bridge config check`
/// must refuse each, naming file, line and key (and never the secret).
/// `env` is set for the check (secret values).
fn service_cases() -> Vec<(FileCase, Vec<(&'static str, &'static str)>)> {
    let inbox = format!("{BASE}\n{INBOX}");
    let seal = "0000000000000000000000000000000000000000000000000000000000000000";
    let good_env = vec![
        ("BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD", "p"),
        ("BRIDGE_FAULT_MATRIX_INBOX_KEY", "0123456789abcdef-key"),
        ("BRIDGE_FAULT_MATRIX_SEAL_KEY", seal),
    ];
    let with = |k: &'static str, v: &'static str| {
        let mut env = good_env.clone();
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
        env
    };
    vec![
        (
            // Refused where the secret is read, without quoting it.
            FileCase::new(
                "a secret in place of a variable name: password = { env = \"<secret>\" }",
                edit(
                    "{ env = \"BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD\" }",
                    "{ env = \"hunter2 s3cret\" }",
                ),
                "primero.password",
                Some("password ="),
            )
            .secret("hunter2 s3cret"),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "inbox.retry_secs = 0 (a message answered Delivery Fail seconds after its 202)",
                format!("{inbox}retry_secs = 0\n"),
                "inbox.retry_secs",
                Some("retry_secs"),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "primero.timeout_secs = 0",
                edit(
                    "user_name = \"u\"\n",
                    "user_name = \"u\"\ntimeout_secs = 0\n",
                ),
                "primero.timeout_secs",
                Some("timeout_secs"),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "jobs.call_timeout_ms = 0",
                format!("{BASE}call_timeout_ms = 0\n"),
                "jobs.call_timeout_ms",
                Some("call_timeout_ms"),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "jobs.memory_mib = 0",
                format!("{BASE}memory_mib = 0\n"),
                "jobs.memory_mib",
                Some("memory_mib"),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "retry.budget_secs = 0",
                format!("{BASE}\n[retry]\nbudget_secs = 0\n"),
                "retry.budget_secs",
                Some("budget_secs"),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "a cron expression that never fires (30 February)",
                format!("{BASE}\n[schedule]\n\"ping-1.1\" = \"0 0 0 30 2 *\"\n"),
                "ping-1.1",
                Some("0 0 0 30 2"),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "state.path is a folder",
                edit("path = \"state.db\"", "path = \".\""),
                "state.path",
                Some("path = \".\""),
            ),
            good_env.clone(),
        ),
        (
            FileCase::new(
                "an empty secret (primero.password)",
                BASE,
                "primero.password",
                Some("password ="),
            ),
            with("BRIDGE_FAULT_MATRIX_PRIMERO_PASSWORD", ""),
        ),
        (
            FileCase::new(
                "an inbox API key with a trailing space (every request would get 401)",
                inbox.clone(),
                "inbox.api_key",
                Some("api_key ="),
            )
            .secret("0123456789abcdef-key "),
            with("BRIDGE_FAULT_MATRIX_INBOX_KEY", "0123456789abcdef-key "),
        ),
    ]
}

/// Whether `error` names the file, the line and the key.
pub fn check(error: &str, file: &Path, case: &FileCase) -> (bool, String) {
    let mut missing = Vec::new();
    if !error.contains(&file.display().to_string()) {
        missing.push("file".to_string());
    }
    let line = case.line();
    if let Some(l) = line {
        let named = error.contains(&format!(":{l}:"))
            || error.contains(&format!("line {l}"))
            || error.contains(&format!(":{l} "));
        if !named {
            missing.push(format!("line {l}"));
        }
    } else if !names_a_line(error, file) {
        missing.push("a line".to_string());
    }
    let key_named = error.contains(&format!("`{}`", case.key))
        || error.contains(&format!(".{}`", case.key))
        || error.contains(&format!("\"{}\"", case.key));
    if !key_named {
        missing.push(format!("key `{}`", case.key));
    }
    let dir = file
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let shown = short(&error.replace(&dir, "<dir>"), 160);
    if missing.is_empty() {
        (true, shown)
    } else {
        (false, format!("{shown} — lacks {}", missing.join(", ")))
    }
}

/// `file:N` or `line N` somewhere in the error.
fn names_a_line(error: &str, file: &Path) -> bool {
    let digit_after = |pat: &str| {
        error
            .match_indices(pat)
            .any(|(i, _)| error[i + pat.len()..].starts_with(|c: char| c.is_ascii_digit()))
    };
    digit_after(&format!("{}:", file.display())) || digit_after("line ")
}

/// The row for an error: it names file, line and key, and never shows the
/// case's secret.
fn judge(row: Row, error: &str, file: &Path, case: &FileCase) -> Row {
    let (pass, shown) = check(error, file, case);
    match case.secret.as_deref() {
        Some(secret) if error.contains(secret) => {
            row.observed(format!("ECHOES THE SECRET: {shown}"), false)
        }
        Some(_) => row.observed(format!("{shown} (secret not shown)"), pass),
        None => row.observed(shown, pass),
    }
}

pub fn expected(file_name: &str, case: &FileCase) -> String {
    match case.line() {
        Some(l) => format!("error names {file_name}, line {l}, key `{}`", case.key),
        None => format!("error names {file_name}, a line, key `{}`", case.key),
    }
}

pub fn run() -> Vec<Row> {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (i, case) in config_cases().into_iter().enumerate() {
        let file = tmp.path().join(format!("bridge-{i}.toml"));
        std::fs::write(&file, &case.text).unwrap();
        let expected = expected("the file", &case);
        let row = Row::new(
            SECTION,
            Kind::BadInput,
            format!("bridge.toml: {}", case.name),
            expected,
        );
        rows.push(match BridgeConfig::load(&file) {
            Ok(_) => row.observed("loaded without error", false),
            Err(e) => judge(row, &e.to_string(), &file, &case),
        });
    }
    // Files that load but would break the service: `bridge config check`.
    for (i, (case, env)) in service_cases().into_iter().enumerate() {
        let file = tmp.path().join(format!("service-{i}.toml"));
        std::fs::write(&file, &case.text).unwrap();
        for (k, v) in &env {
            std::env::set_var(k, v);
        }
        let report = bridge_service::check::check_config(&file);
        let row = Row::new(
            SECTION,
            Kind::BadInput,
            format!("`bridge config check`: {}", case.name),
            format!("refused; {}", expected("the file", &case)),
        );
        let named: Vec<&String> = report
            .problems
            .iter()
            .filter(|p| {
                p.contains(&format!("`{}`", case.key))
                    || p.contains(&format!(".{}`", case.key))
                    || p.contains(&format!("\"{}\"", case.key))
            })
            .collect();
        rows.push(match named.first() {
            None if report.ok() => row.observed("accepted (config OK)", false),
            None => row.observed(
                format!(
                    "no problem names `{}`: {}",
                    case.key,
                    short(&report.problems.join("; "), 140)
                ),
                false,
            ),
            Some(problem) => {
                let all = report.problems.join("\n");
                let leaked = case.secret.as_deref().is_some_and(|s| all.contains(s));
                let row = judge(row, problem, &file, &case);
                if leaked {
                    let observed = format!("ECHOES THE SECRET: {}", row.observed);
                    row.observed(observed, false)
                } else {
                    row
                }
            }
        });
    }
    // A listener beyond loopback is worth a warning.
    let file = tmp.path().join("listen.toml");
    std::fs::write(
        &file,
        format!("{BASE}\n[metrics]\nlisten = \"0.0.0.0:9464\"\n"),
    )
    .unwrap();
    let report = bridge_service::check::check_config(&file);
    let warned = report
        .warnings
        .iter()
        .any(|w| w.contains("metrics.listen") && w.contains(":14:"));
    rows.push(
        Row::new(
            SECTION,
            Kind::BadInput,
            "`bridge config check`: metrics.listen on 0.0.0.0",
            "a warning naming the file, line 14 and key `metrics.listen`",
        )
        .observed(
            if warned {
                "warned".to_string()
            } else {
                format!("no such warning: {:?}", report.warnings)
            },
            warned,
        ),
    );
    // Control: the base file loads, so the failures above are the edits'.
    let file = tmp.path().join("bridge.toml");
    std::fs::write(&file, BASE).unwrap();
    let ok = BridgeConfig::load(&file);
    rows.push(
        Row::new(
            SECTION,
            Kind::BadInput,
            "control: the unedited file",
            "loads",
        )
        .observed(
            match &ok {
                Ok(_) => "loads".to_string(),
                Err(e) => e.to_string(),
            },
            ok.is_ok(),
        )
        .tried(0),
    );
    // TODO(lead): once `bridge config check` covers more keys (secrets both
    // env and file, unknown auth mode, bad limits), add their cases here.
    rows
}

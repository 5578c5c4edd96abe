//! Invalid config and mapping files: each error names the file, the line and
//! the key. Cases are data: to cover a new config section, add a line to
//! [`config_cases`].

use std::path::Path;

use bridge::config::BridgeConfig;

use crate::support::short;
use crate::{Kind, Row};

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
}

impl FileCase {
    pub fn new(name: &str, text: impl Into<Vec<u8>>, key: &str, at: Option<&str>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            key: key.into(),
            at: at.map(str::to_string),
        }
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
        ),
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
            Err(e) => {
                let (pass, shown) = check(&e.to_string(), &file, &case);
                row.observed(shown, pass)
            }
        });
    }
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

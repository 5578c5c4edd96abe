//! A job's fixtures: `jobs/<job>/fixtures/<case>.record.json` (the record
//! bundle as the host hands it to `run`) and `<case>.expected.json` (the
//! outcome in the form `bridge job run` prints), with the conventions of
//! `jobs/README.md`: today 2025-06-01, the job's own flow, the mapping folder
//! `mappings/kenya-dadaab`, each overridable in `fixtures/fixtures.json`
//! (which `npm test` reads too).
//!
//! Run through the real component here (`bridge job test`, the end-to-end
//! suite's fixture tests); the expected outcome is compared as the host
//! receives it ([`as_received`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::instance::{as_received, outcome_report, JobContext, JobInstance};
use super::job_text::{REDACTED, TEXT_MAX_CHARS};

/// The folder of a job's fixtures, and the settings file in it.
pub const FIXTURES_DIR: &str = "fixtures";
pub const SETTINGS_FILE: &str = "fixtures.json";

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `fixtures/fixtures.json`: what a job's fixtures are written for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureSettings {
    /// The mapping folder, a name in the project's `mappings/`.
    #[serde(default = "default_mappings")]
    pub mappings: String,
    /// The jobs' date, `YYYY-MM-DD`.
    #[serde(default = "default_today")]
    pub today: String,
    /// The flow in the context; the job's own (`describe().flow`) when unset.
    #[serde(default)]
    pub flow: Option<String>,
    #[serde(default = "default_run_id")]
    pub run_id: String,
}

fn default_mappings() -> String {
    "kenya-dadaab".into()
}

fn default_today() -> String {
    "2025-06-01".into()
}

fn default_run_id() -> String {
    "fixture".into()
}

impl Default for FixtureSettings {
    fn default() -> Self {
        Self {
            mappings: default_mappings(),
            today: default_today(),
            flow: None,
            run_id: default_run_id(),
        }
    }
}

impl FixtureSettings {
    /// The settings of the job in `job_dir` (the defaults without a file).
    pub fn of_job(job_dir: &Path) -> Result<Self, FixtureError> {
        let path = job_dir.join(FIXTURES_DIR).join(SETTINGS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| FixtureError::Json {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(FixtureError::Read { path, source }),
        }
    }

    /// The call context of a fixture run for a job serving `job_flow`.
    pub fn context(&self, job_flow: &str) -> JobContext {
        JobContext {
            flow: self.flow.clone().unwrap_or_else(|| job_flow.to_string()),
            run_id: self.run_id.clone(),
            today: self.today.clone(),
            dry_run: true,
        }
    }
}

/// One fixture of a job.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `<case>`, the file names' stem.
    pub name: String,
    pub record_path: PathBuf,
    pub expected_path: PathBuf,
    /// The record as JSON text, as the host passes it.
    pub record: String,
    /// The job's expected outcome as its file holds it; `None` without a file.
    pub expected: Option<serde_json::Value>,
}

fn read_json(path: &Path) -> Result<serde_json::Value, FixtureError> {
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FixtureError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The fixtures of the job in `job_dir`, by name; none without a folder.
pub fn fixtures_of(job_dir: &Path) -> Result<Vec<Fixture>, FixtureError> {
    let dir = job_dir.join(FIXTURES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FixtureError::Read { path: dir, source }),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".record.json")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let record_path = dir.join(format!("{name}.record.json"));
            let expected_path = dir.join(format!("{name}.expected.json"));
            let record = read_json(&record_path)?.to_string();
            let expected = if expected_path.is_file() {
                Some(read_json(&expected_path)?)
            } else {
                None
            };
            Ok(Fixture {
                name,
                record_path,
                expected_path,
                record,
                expected,
            })
        })
        .collect()
}

/// A fixture run through the component.
#[derive(Debug, Clone)]
pub struct Checked {
    pub fixture: Fixture,
    /// The outcome, as `bridge job run` prints it.
    pub actual: serde_json::Value,
    /// The expected outcome as the host receives it (texts reduced to
    /// codes, record values redacted); `None` without an expected file.
    pub expected: Option<serde_json::Value>,
}

impl Checked {
    pub fn passed(&self) -> bool {
        self.expected.as_ref() == Some(&self.actual)
    }

    /// Why the outcome cannot be written as the expected file (`--update`),
    /// or `None` when it can. The expected file holds the job's own words,
    /// which `npm test` compares in node; where the host reduced a text
    /// (a word redacted, a text cut), those words are not known here.
    pub fn unwritable(&self) -> Option<String> {
        if self.actual.get("outcome").and_then(|o| o.as_str()) == Some("emit") {
            return None;
        }
        let texts = ["reason", "message", "field", "table", "value"];
        let reduced = texts.iter().find(|key| {
            self.actual
                .get(**key)
                .and_then(|v| v.as_str())
                .is_some_and(|t| t.contains(REDACTED) || t.chars().count() >= TEXT_MAX_CHARS)
        })?;
        Some(format!(
            "the host reduced the job's `{reduced}` (a word not a code or held by the record is {REDACTED}, a text is cut at {TEXT_MAX_CHARS} characters): write the job's own words into {} by hand (`npm test --prefix jobs` shows them)",
            self.fixture.expected_path.display()
        ))
    }

    /// Write the outcome as the fixture's expected file.
    pub fn write_expected(&self) -> Result<(), FixtureError> {
        let path = &self.fixture.expected_path;
        let text = serde_json::to_string_pretty(&self.actual).expect("a JSON value serializes");
        std::fs::write(path, format!("{text}\n")).map_err(|source| FixtureError::Write {
            path: path.clone(),
            source,
        })
    }
}

/// Run each fixture through `instance` (configured already) with `ctx`.
pub async fn check(
    instance: &mut JobInstance,
    ctx: &JobContext,
    fixtures: Vec<Fixture>,
) -> Vec<Checked> {
    let mut out = Vec::with_capacity(fixtures.len());
    for fixture in fixtures {
        let result = instance.run(ctx, &fixture.name, &fixture.record).await;
        let actual = outcome_report(&result);
        let expected = fixture
            .expected
            .as_ref()
            .map(|e| as_received(e, &fixture.record));
        out.push(Checked {
            fixture,
            actual,
            expected,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(FIXTURES_DIR)).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(FIXTURES_DIR).join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn settings_default_and_override() {
        let none = job_dir(&[]);
        assert_eq!(
            FixtureSettings::of_job(none.path()).unwrap(),
            FixtureSettings::default()
        );
        let some = job_dir(&[(SETTINGS_FILE, r#"{"mappings": "ethiopia-gambella"}"#)]);
        let s = FixtureSettings::of_job(some.path()).unwrap();
        assert_eq!(s.mappings, "ethiopia-gambella");
        assert_eq!(s.today, "2025-06-01");
        assert_eq!(s.context("dtp-1.1").flow, "dtp-1.1");
        let bad = job_dir(&[(SETTINGS_FILE, r#"{"mapping": "x"}"#)]);
        let e = FixtureSettings::of_job(bad.path()).unwrap_err().to_string();
        assert!(e.contains("fixtures.json") && e.contains("mapping"), "{e}");
    }

    #[test]
    fn fixtures_are_listed_by_name_with_or_without_expected_files() {
        let dir = job_dir(&[
            ("b.record.json", r#"{"x": 1}"#),
            ("b.expected.json", r#"{"outcome": "skip", "reason": "r"}"#),
            ("a.record.json", r#"{"y": 2}"#),
            (SETTINGS_FILE, "{}"),
        ]);
        let found = fixtures_of(dir.path()).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(found[0].expected.is_none());
        assert_eq!(found[1].record, r#"{"x":1}"#);
        let broken = job_dir(&[("c.record.json", "{")]);
        let e = fixtures_of(broken.path()).unwrap_err().to_string();
        assert!(e.contains("c.record.json"), "{e}");
    }

    #[test]
    fn a_reduced_text_is_not_written_as_expected() {
        let dir = job_dir(&[("a.record.json", "{}")]);
        let fixture = fixtures_of(dir.path()).unwrap().remove(0);
        let checked = |actual: serde_json::Value| Checked {
            fixture: fixture.clone(),
            actual,
            expected: None,
        };
        let skip =
            checked(serde_json::json!({"outcome": "skip", "reason": "not-for-primero: BIA"}));
        assert_eq!(skip.unwritable(), None);
        skip.write_expected().unwrap();
        assert_eq!(
            read_json(&fixture.expected_path).unwrap(),
            serde_json::json!({"outcome": "skip", "reason": "not-for-primero: BIA"})
        );
        let redacted = checked(serde_json::json!({"outcome": "skip", "reason": "x: <redacted>"}));
        assert!(redacted.unwritable().unwrap().contains("by hand"));
    }
}

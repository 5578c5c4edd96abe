//! The approvals file: which job components an auditor approved, by the
//! SHA-256 of their bytes (what `LoadedJob::content_hash` is), and the gate
//! that makes the host refuse any other component (`[jobs]
//! require_approved`).
//!
//! ```toml
//! [[approved]]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! job = "ping-1.1"
//! version = "0.3.0"
//! flow = "ping-1.1"
//! imports = ["bridge:job/log@0.2.0", "bridge:job/types@0.2.0"]
//! approved_by = "dpo-gambella"
//! approved_at = "2026-12-06T09:30:00Z"
//! ```
//!
//! Only the hash decides; name, version, flow and imports record what the
//! approver was shown. `approved_by` is an id (a code), never a name.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;
use toml::Spanned;

use super::job_text::is_code;

/// A problem with an approvals file, named by file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalsError {
    #[error("approvals file {file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{file}:{line}: key `{key}`: {message}")]
    Key {
        file: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// One approved component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// SHA-256 of the component bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// The job's name and version, as its `describe()` says.
    pub job: String,
    pub version: String,
    pub flow: String,
    /// What the component imports, as `bridge job inspect` lists them.
    pub imports: Vec<String>,
    /// Who approved it: an id, not a name.
    pub approved_by: String,
    /// When, RFC 3339.
    pub approved_at: String,
}

impl Approval {
    /// The entry as TOML text, ready to append to the file.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let imports: Vec<String> = self.imports.iter().map(|i| q(i)).collect();
        format!(
            "[[approved]]\nsha256 = {}\njob = {}\nversion = {}\nflow = {}\nimports = [{}]\napproved_by = {}\napproved_at = {}\n",
            q(&self.sha256),
            q(&self.job),
            q(&self.version),
            q(&self.flow),
            imports.join(", "),
            q(&self.approved_by),
            q(&self.approved_at),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    approved: Vec<RawApproval>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    sha256: Spanned<String>,
    job: Spanned<String>,
    version: Spanned<String>,
    flow: Spanned<String>,
    imports: Spanned<Vec<String>>,
    approved_by: Spanned<String>,
    approved_at: Spanned<String>,
}

/// The parsed, validated approvals file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    pub file: PathBuf,
    pub entries: Vec<Approval>,
}

/// Whether `s` is a SHA-256 in lowercase hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Approvals {
    /// Read and validate `file`; a file that does not exist is an error.
    pub fn load(file: &Path) -> Result<Self, ApprovalsError> {
        let text = std::fs::read_to_string(file).map_err(|e| ApprovalsError::File {
            file: file.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(file, &text)
    }

    /// Like [`Approvals::load`], but a file that does not exist is empty
    /// (what `bridge job approve` starts from).
    pub fn load_or_empty(file: &Path) -> Result<Self, ApprovalsError> {
        if !file.exists() {
            return Ok(Self {
                file: file.to_path_buf(),
                entries: Vec::new(),
            });
        }
        Self::load(file)
    }

    /// Validate the text of `file`: shape, unknown keys, each value, and
    /// one entry per hash.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ApprovalsError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let (line, key) = bridge_mappings::toml_error_location(text, &e);
            match (line, key) {
                (Some(line), Some(key)) => ApprovalsError::Key {
                    file: file.to_path_buf(),
                    line,
                    key,
                    message: e.message().trim().to_string(),
                },
                (line, _) => ApprovalsError::File {
                    file: file.to_path_buf(),
                    message: match line {
                        Some(l) => format!("line {l}: {}", e.message().trim()),
                        None => e.message().trim().to_string(),
                    },
                },
            }
        })?;
        let mut entries: Vec<Approval> = Vec::with_capacity(raw.approved.len());
        for (i, a) in raw.approved.into_iter().enumerate() {
            let at =
                |key: &str, span: std::ops::Range<usize>, message: String| ApprovalsError::Key {
                    file: file.to_path_buf(),
                    line: line_of(text, span.start),
                    key: format!("approved[{i}].{key}"),
                    message,
                };
            if !is_sha256_hex(a.sha256.get_ref()) {
                return Err(at(
                    "sha256",
                    a.sha256.span(),
                    "must be the SHA-256 of the component, 64 lowercase hex digits (what `bridge job inspect` prints)".into(),
                ));
            }
            for (key, value) in [
                ("job", &a.job),
                ("version", &a.version),
                ("flow", &a.flow),
                ("approved_by", &a.approved_by),
            ] {
                if !is_code(value.get_ref()) {
                    return Err(at(
                        key,
                        value.span(),
                        "must be a code: 1 to 64 of letters, digits and _.:/#- (an id, not a name)"
                            .into(),
                    ));
                }
            }
            if chrono::DateTime::parse_from_rfc3339(a.approved_at.get_ref()).is_err() {
                return Err(at(
                    "approved_at",
                    a.approved_at.span(),
                    "must be an RFC 3339 date-time, e.g. \"2026-12-06T09:30:00Z\"".into(),
                ));
            }
            if let Some(first) = entries.iter().position(|e| e.sha256 == *a.sha256.get_ref()) {
                return Err(at(
                    "sha256",
                    a.sha256.span(),
                    format!("approved twice (also approved[{first}]): one entry per component"),
                ));
            }
            entries.push(Approval {
                sha256: a.sha256.into_inner(),
                job: a.job.into_inner(),
                version: a.version.into_inner(),
                flow: a.flow.into_inner(),
                imports: a.imports.into_inner(),
                approved_by: a.approved_by.into_inner(),
                approved_at: a.approved_at.into_inner(),
            });
        }
        Ok(Self {
            file: file.to_path_buf(),
            entries,
        })
    }

    /// The approval of the component with this SHA-256, if any.
    pub fn find(&self, sha256: &str) -> Option<&Approval> {
        self.entries.iter().find(|e| e.sha256 == sha256)
    }

    /// Append `approval` to `file` (created when missing), keeping what the
    /// file holds (comments included). Refuses a component approved already
    /// and a file that does not validate. Written atomically: the new file
    /// is validated whole before it replaces the old one.
    pub fn append(file: &Path, approval: &Approval) -> Result<Self, ApprovalsError> {
        let old = if file.exists() {
            std::fs::read_to_string(file).map_err(|e| ApprovalsError::File {
                file: file.to_path_buf(),
                message: format!("cannot read: {e}"),
            })?
        } else {
            "# Job components approved to run (`[jobs] require_approved`), by the SHA-256\n# of their bytes. Written by `bridge job approve`; see docs/auditor/job-approvals.md.\n".to_string()
        };
        let current = Self::parse(file, &old)?;
        if let Some(existing) = current.find(&approval.sha256) {
            return Err(ApprovalsError::File {
                file: file.to_path_buf(),
                message: format!(
                    "component {} is approved already (job {} {}, by {} at {})",
                    approval.sha256,
                    existing.job,
                    existing.version,
                    existing.approved_by,
                    existing.approved_at
                ),
            });
        }
        let mut text = old;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&approval.to_toml());
        let updated = Self::parse(file, &text)?;
        let io = |e: std::io::Error| ApprovalsError::File {
            file: file.to_path_buf(),
            message: format!("cannot write: {e}"),
        };
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            file.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        std::fs::write(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, file).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        Ok(updated)
    }
}

/// Size and modification time: enough to notice an edit.
type Stamp = Option<(u64, Option<SystemTime>)>;

fn stamp_of(file: &Path) -> Stamp {
    std::fs::metadata(file)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// The host's side of `[jobs] require_approved`: the approvals file, read
/// at start and again whenever it changed ([`ApprovalGate::refresh`], on
/// every hot-reload poll). A file that stops validating refuses every new
/// component until it is fixed; what is serving keeps serving.
#[derive(Debug)]
pub struct ApprovalGate {
    file: PathBuf,
    state: Mutex<(Stamp, Result<Approvals, ApprovalsError>)>,
}

impl ApprovalGate {
    /// Read the file; it must exist and validate.
    pub fn open(file: &Path) -> Result<Self, ApprovalsError> {
        let stamp = stamp_of(file);
        let approvals = Approvals::load(file)?;
        Ok(Self {
            file: file.to_path_buf(),
            state: Mutex::new((stamp, Ok(approvals))),
        })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Read the file again if it changed since the last look; whether it did.
    pub fn refresh(&self) -> bool {
        let now = stamp_of(&self.file);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 == now {
            return false;
        }
        let read = Approvals::load(&self.file);
        match &read {
            Ok(a) => tracing::info!(
                count = a.entries.len(),
                "approvals file changed: read again"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "approvals file changed and is invalid: every new job version is refused until it is fixed"
            ),
        }
        *state = (now, read);
        true
    }

    /// The approval of `sha256`, or why the component may not load.
    pub fn check(&self, sha256: &str) -> Result<Approval, String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &state.1 {
            Err(e) => Err(format!(
                "component sha256 {sha256} cannot be checked against the approvals file, which is invalid: {e}"
            )),
            Ok(approvals) => approvals.find(sha256).cloned().ok_or_else(|| {
                format!(
                    "component sha256 {sha256} is not approved in {} (`[jobs] require_approved` is on): review it with `bridge job inspect` and approve it with `bridge job approve`",
                    self.file.display()
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn approval(hash: &str) -> Approval {
        Approval {
            sha256: hash.into(),
            job: "ping-1.1".into(),
            version: "0.3.0".into(),
            flow: "ping-1.1".into(),
            imports: vec!["bridge:job/log@0.2.0 (interface)".into()],
            approved_by: "dpo-gambella".into(),
            approved_at: "2026-12-06T09:30:00Z".into(),
        }
    }

    fn parse(text: &str) -> Result<Approvals, ApprovalsError> {
        Approvals::parse(Path::new("approvals.toml"), text)
    }

    #[test]
    fn an_entry_round_trips_through_its_toml() {
        let text = approval(HASH_A).to_toml();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.entries, vec![approval(HASH_A)]);
        assert_eq!(parsed.find(HASH_A), Some(&approval(HASH_A)));
        assert_eq!(parsed.find(HASH_B), None);
        assert!(parse("# nothing approved yet\n")
            .unwrap()
            .entries
            .is_empty());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let good = approval(HASH_A).to_toml();
        let cases = [
            (
                good.replace(HASH_A, "ABC"),
                2,
                "approved[0].sha256",
                "64 lowercase hex",
            ),
            (
                good.replace(HASH_A, &HASH_A.to_uppercase()),
                2,
                "approved[0].sha256",
                "64 lowercase hex",
            ),
            (
                good.replace("\"0.3.0\"", "\"0.3 beta\""),
                4,
                "approved[0].version",
                "a code",
            ),
            (
                good.replace("dpo-gambella", "Jane Doe"),
                7,
                "approved[0].approved_by",
                "not a name",
            ),
            (
                good.replace("2026-12-06T09:30:00Z", "yesterday"),
                8,
                "approved[0].approved_at",
                "RFC 3339",
            ),
            (good.replace("flow =", "flwo ="), 5, "flwo", "unknown field"),
            (
                format!("{good}\n{good}"),
                11,
                "approved[1].sha256",
                "approved twice",
            ),
        ];
        for (text, line, key, message) in cases {
            match parse(&text) {
                Err(ApprovalsError::Key {
                    file,
                    line: l,
                    key: k,
                    message: m,
                }) => {
                    assert_eq!(file, Path::new("approvals.toml"));
                    assert_eq!((l, k.as_str()), (line, key), "{m}\n{text}");
                    assert!(m.contains(message), "{m}");
                }
                other => panic!("{key}: {other:?}\n{text}"),
            }
        }
        let missing = good.replace("approved_by = \"dpo-gambella\"\n", "");
        let e = parse(&missing).unwrap_err().to_string();
        assert!(
            e.contains("approvals.toml") && e.contains("approved_by"),
            "{e}"
        );
    }

    #[test]
    fn append_creates_keeps_comments_and_refuses_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("approvals.toml");
        let one = Approvals::append(&file, &approval(HASH_A)).unwrap();
        assert_eq!(one.entries.len(), 1);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, format!("{text}# reviewed with the DPO\n")).unwrap();
        let two = Approvals::append(&file, &approval(HASH_B)).unwrap();
        assert_eq!(two.entries.len(), 2);
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("# reviewed with the DPO"));

        let before = std::fs::read_to_string(&file).unwrap();
        let e = Approvals::append(&file, &approval(HASH_A))
            .unwrap_err()
            .to_string();
        assert!(e.contains("approved already") && e.contains(HASH_A), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "unchanged");
        assert_eq!(Approvals::load(&file).unwrap(), two);
    }

    #[test]
    fn the_gate_refuses_unapproved_and_rereads_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("approvals.toml");
        assert!(
            ApprovalGate::open(&file).is_err(),
            "a missing file is refused"
        );
        Approvals::append(&file, &approval(HASH_A)).unwrap();
        let gate = ApprovalGate::open(&file).unwrap();
        assert_eq!(gate.check(HASH_A).unwrap().approved_by, "dpo-gambella");
        let refused = gate.check(HASH_B).unwrap_err();
        assert!(
            refused.contains(HASH_B) && refused.contains("approvals.toml"),
            "{refused}"
        );
        assert!(!gate.refresh(), "unchanged");

        Approvals::append(&file, &approval(HASH_B)).unwrap();
        assert!(gate.refresh());
        assert!(gate.check(HASH_B).is_ok());

        std::fs::write(&file, "[[approved]]\nsha256 = 1\n").unwrap();
        assert!(gate.refresh());
        let e = gate.check(HASH_A).unwrap_err();
        assert!(
            e.contains("invalid") && e.contains("approvals.toml:2"),
            "{e}"
        );
    }
}

//! Country mapping tables: data only, in `mappings/<country>/`, validated on
//! load and handed to jobs as JSON.
//!
//! One TOML file per table (the file stem is the table name):
//!
//! ```toml
//! description = "what it maps and who edits it"
//! default = "language6"        # optional; without it an unlisted value is an error
//! [map]
//! "Anyuak" = "language1"
//! ```
//!
//! plus `deployment.toml` with the deployment's ids. Errors name the file, the
//! line and the key, so a country team can fix a file without reading code.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod jobs;
pub mod manifest;
pub mod new_country;
pub mod sharing;

pub use jobs::JobChoice;
pub use sharing::{ConsentPolicy, Sharing, SHARING_FILE};

/// File holding deployment ids rather than a table.
pub const DEPLOYMENT_FILE: &str = "deployment.toml";

/// Marks a value as a placeholder: `"CHANGE-ME: notavailable@primero.org"`.
/// The shipped folders mark every value a country must still confirm. The
/// value after the mark is what the demo and the tests against the
/// simulators use; `bridge config check`, `bridge mappings check`, `bridge
/// run` and `bridge flow run` refuse a folder that still holds one unless
/// placeholders are allowed explicitly (`[jobs] allow_placeholders`,
/// `--allow-placeholders`), so a real deployment cannot go live with them.
pub const PLACEHOLDER_MARK: &str = "CHANGE-ME:";

/// A mapping problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Deployment-specific ids (spec §5.17: nothing of this is hard-coded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub country: String,
    /// `ping` (design B) or `dtp` (design A).
    pub design: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interop_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// Primero user owning cases created from proGres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intake_user: Option<String>,
    /// Primero user representing UNHCR (recipient of outbound referrals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_position: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_phone: Option<String>,
}

/// PING shipping process ids of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingProcesses {
    pub pending_referrals: Option<String>,
    pub intervention_details: Option<String>,
    pub transfer_status: Option<String>,
    pub referral_ingestion: Option<String>,
    pub decision_list: Option<String>,
    pub decision_details: Option<String>,
    pub decision_synced: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    deployment: Deployment,
    #[serde(default)]
    shipping_processes: ShippingProcesses,
    /// Flows served by a variant of their job (`jobs.rs`).
    #[serde(default)]
    jobs: jobs::RawJobs,
}

/// One mapping table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Optional closed list of the codes allowed on the left (the keys of
    /// `map`): declared where the keys are a partner's codes (a proGres
    /// option set, DTP's labels), so a mistyped key, which would never
    /// match, is a load error naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Optional closed list of the codes allowed on the right (the mapped
    /// values and the default): declared where the values are a partner's
    /// codes, so a typo is a load error instead of a value that points nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    pub map: BTreeMap<String, String>,
}

impl Table {
    /// The mapped value, the declared default, or `None` (unmapped).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .or(self.default.as_ref())
            .map(String::as_str)
    }
}

/// A validated mapping folder.
#[derive(Debug, Clone)]
pub struct MappingSet {
    pub dir: PathBuf,
    pub deployment: Deployment,
    pub shipping_processes: ShippingProcesses,
    pub tables: BTreeMap<String, Table>,
    /// SHA-256 over file names and contents: the version identity.
    pub content_hash: String,
    /// Values still marked [`PLACEHOLDER_MARK`], each with its file, line
    /// and key (the mark is taken off the loaded value).
    pub placeholders: Vec<MappingError>,
    /// `sharing.toml`: the data points each flow may send, and the consent
    /// policy. `None`: the folder has none, and every flow shares nothing.
    pub sharing: Option<Arc<Sharing>>,
    /// `[jobs]` of `deployment.toml`: flows this deployment serves with a
    /// variant of their job, in flow order. Not handed to jobs.
    pub jobs: Vec<JobChoice>,
    job_json: Arc<String>,
}

impl Deployment {
    /// Every text value with its key.
    fn values_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut all = vec![("country", &mut self.country), ("design", &mut self.design)];
        let optional = [
            ("partner_id", &mut self.partner_id),
            ("interop_id", &mut self.interop_id),
            ("module_id", &mut self.module_id),
            ("intake_user", &mut self.intake_user),
            ("unhcr_user", &mut self.unhcr_user),
            ("business_unit", &mut self.business_unit),
            ("organisation_from", &mut self.organisation_from),
            ("admin_email", &mut self.admin_email),
            ("admin_name", &mut self.admin_name),
            ("admin_position", &mut self.admin_position),
            ("admin_phone", &mut self.admin_phone),
        ];
        all.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.as_mut().map(|v| (k, v))),
        );
        all
    }
}

impl ShippingProcesses {
    fn values_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        [
            ("pending_referrals", &mut self.pending_referrals),
            ("intervention_details", &mut self.intervention_details),
            ("transfer_status", &mut self.transfer_status),
            ("referral_ingestion", &mut self.referral_ingestion),
            ("decision_list", &mut self.decision_list),
            ("decision_details", &mut self.decision_details),
            ("decision_synced", &mut self.decision_synced),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_mut().map(|v| (k, v)))
        .collect()
    }
}

/// Take the placeholder mark off `value`; when it had one, the problem
/// (file, line, key) to report.
fn unmark(
    file: &Path,
    text: &str,
    (line_key, key): (&str, String),
    value: &mut String,
) -> Option<MappingError> {
    let rest = value.trim_start().strip_prefix(PLACEHOLDER_MARK)?;
    let example = rest.trim().to_string();
    let problem = MappingError {
        file: file.to_path_buf(),
        line: line_of_key(text, line_key),
        key: Some(key),
        message: format!(
            "placeholder `{} {example}`: replace it with this deployment's own value (and drop the mark) before go-live",
            PLACEHOLDER_MARK
        ),
    };
    *value = example;
    Some(problem)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Find the line where `key` is defined, for errors raised after parsing.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(key) && t[key.len()..].trim_start().starts_with('=')
                || t.starts_with(&format!("\"{key}\""))
                || t == format!("[{key}]")
        })
        .map(|i| i + 1)
}

/// The line defining `key` in the `[map]` table (a map key may be spelt
/// like a top-level key such as `values`, so only lines after `[map]` count).
fn line_of_map_key(text: &str, key: &str) -> Option<usize> {
    let start = text.lines().position(|l| l.trim() == "[map]")?;
    let quoted = toml::Value::String(key.to_string()).to_string();
    text.lines()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| {
            let t = l.trim_start();
            [quoted.as_str(), key].iter().any(|k| {
                t.strip_prefix(k)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
        })
        .map(|(i, _)| i + 1)
}

/// Every entry of `table` outside its declared `keys` or `values`, each
/// located by file, line and key.
fn outside_allowed(file: &Path, text: &str, table: &Table) -> Vec<MappingError> {
    let problem = |line: Option<usize>, key: String, message: String| MappingError {
        file: file.to_path_buf(),
        line,
        key: Some(key),
        message,
    };
    let mut found = Vec::new();
    if let Some(allowed) = &table.keys {
        for key in table.map.keys().filter(|k| !allowed.contains(k)) {
            found.push(problem(
                line_of_map_key(text, key),
                format!("map.{key}"),
                format!(
                    "`{key}` is not one of the table's `keys` ({}): a key the partner never sends never matches",
                    allowed.join(", ")
                ),
            ));
        }
    }
    if let Some(allowed) = &table.values {
        let not_allowed = |v: &String| !allowed.contains(v);
        for (key, value) in table.map.iter().filter(|(_, v)| not_allowed(v)) {
            found.push(problem(
                line_of_map_key(text, key),
                format!("map.{key}"),
                format!(
                    "`{value}` is not one of the table's `values` ({})",
                    allowed.join(", ")
                ),
            ));
        }
        if let Some(default) = table.default.as_ref().filter(|d| not_allowed(d)) {
            found.push(problem(
                line_of_key(text, "default"),
                "default".into(),
                format!(
                    "`{default}` is not one of the table's `values` ({})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    // In file order, as a person fixes them.
    found.sort_by_key(|p| p.line);
    found
}

/// Where a TOML error points: its 1-based line, and the key it concerns,
/// named by serde ("unknown field `x`", "missing field `x`") or by the parser
/// ("duplicate key `x`"), or else the dotted key defined on that line (a value
/// of the wrong type, a syntax error). Shared with the config loader.
pub fn toml_error_location(text: &str, e: &toml::de::Error) -> (Option<usize>, Option<String>) {
    let line = e.span().map(|s| line_of(text, s.start));
    let message = e.message();
    let named = message
        .split('`')
        .nth(1)
        .filter(|k| {
            !k.is_empty() && (message.contains("field") || message.contains("duplicate key"))
        })
        .map(str::to_string);
    let key = named.or_else(|| line.and_then(|l| key_at_line(text, l)));
    (line, key)
}

/// The name of a `[table]` header line.
fn header_name(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix('[')?;
    let name = rest.trim_start_matches('[').split(']').next()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The dotted key a line defines (`table.key`), or the table a header names.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?.trim();
    if here.starts_with('[') {
        return header_name(here);
    }
    let (key, _) = here.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() {
        return None;
    }
    let table = lines[..line - 1]
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with('['))
        .and_then(|l| header_name(l));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

fn parse_toml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, MappingError> {
    toml::from_str(text).map_err(|e| {
        let (line, key) = toml_error_location(text, &e);
        MappingError {
            file: file.to_path_buf(),
            line,
            key,
            message: e.message().trim().to_string(),
        }
    })
}

/// A file's text; bytes that are not UTF-8 are an error at their line.
fn read_text(file: &Path) -> Result<String, MappingError> {
    let bytes = std::fs::read(file).map_err(|e| MappingError {
        file: file.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let (line, key) = invalid_utf8_location(e.as_bytes(), e.utf8_error().valid_up_to());
        MappingError {
            file: file.to_path_buf(),
            line: Some(line),
            key,
            message: "is not valid UTF-8 text".into(),
        }
    })
}

/// The line (1-based) of the first byte that is not UTF-8, and the key that
/// line defines. Shared with the config loader.
pub fn invalid_utf8_location(bytes: &[u8], valid_up_to: usize) -> (usize, Option<String>) {
    let prefix = String::from_utf8_lossy(&bytes[..valid_up_to.min(bytes.len())]);
    let line = line_of(&prefix, prefix.len());
    (line, key_at_line(&prefix, line))
}

impl MappingSet {
    /// Load and validate every file of a mapping folder. The error is the
    /// first problem found; [`MappingSet::check_dir`] gives each one.
    pub fn load_dir(dir: &Path) -> Result<Self, MappingError> {
        Self::check_dir(dir).map_err(|mut all| {
            let mut first = all.remove(0);
            if !all.is_empty() {
                first.message = format!(
                    "{} (and {} more: `bridge mappings check` names each)",
                    first.message,
                    all.len()
                );
            }
            first
        })
    }

    /// [`MappingSet::load_dir`], reporting every entry outside a table's
    /// declared `keys` or `values` (each with its file, line and key) rather
    /// than the first. A file that does not parse stops the check there.
    pub fn check_dir(dir: &Path) -> Result<Self, Vec<MappingError>> {
        let mut outside = Vec::new();
        let set = Self::load_checked(dir, &mut outside).map_err(|e| vec![e])?;
        if outside.is_empty() {
            Ok(set)
        } else {
            Err(outside)
        }
    }

    fn load_checked(dir: &Path, outside: &mut Vec<MappingError>) -> Result<Self, MappingError> {
        let err = |file: &Path, message: String| MappingError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| err(dir, format!("cannot read mapping folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();

        let mut hasher = Sha256::new();
        let mut deployment = None;
        let mut tables = BTreeMap::new();
        let mut placeholders = Vec::new();
        let mut sharing_text = None;
        let mut job_choices = Vec::new();
        for file in &files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || name.ends_with(".md") {
                continue;
            }
            if !name.ends_with(".toml") {
                return Err(err(
                    file,
                    "unexpected file: a mapping folder holds only .toml tables, deployment.toml and .md notes".into(),
                ));
            }
            let text = read_text(file)?;
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            if name == SHARING_FILE {
                // Not a table: read once the tables it names are loaded.
                sharing_text = Some((file.clone(), text));
            } else if name == DEPLOYMENT_FILE {
                let mut parsed: DeploymentFile = parse_toml(file, &text)?;
                for (key, value) in parsed.deployment.values_mut() {
                    placeholders.extend(unmark(
                        file,
                        &text,
                        (key, format!("deployment.{key}")),
                        value,
                    ));
                }
                for (key, value) in parsed.shipping_processes.values_mut() {
                    placeholders.extend(unmark(
                        file,
                        &text,
                        (key, format!("shipping_processes.{key}")),
                        value,
                    ));
                }
                for (key, value) in [
                    ("country", &parsed.deployment.country),
                    ("design", &parsed.deployment.design),
                ] {
                    if value.trim().is_empty() {
                        return Err(MappingError {
                            file: file.clone(),
                            line: line_of_key(&text, key),
                            key: Some(format!("deployment.{key}")),
                            message: "must not be empty".into(),
                        });
                    }
                }
                if !["ping", "dtp"].contains(&parsed.deployment.design.as_str()) {
                    return Err(MappingError {
                        file: file.clone(),
                        line: line_of_key(&text, "design"),
                        key: Some("deployment.design".into()),
                        message: format!(
                            "`{}` is not a design: use \"ping\" or \"dtp\"",
                            parsed.deployment.design
                        ),
                    });
                }
                job_choices = jobs::parse(
                    file,
                    &text,
                    std::mem::take(&mut parsed.jobs),
                    &parsed.deployment.design,
                )?;
                deployment = Some(parsed);
            } else {
                let stem = name.trim_end_matches(".toml").to_string();
                if !stem
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    return Err(err(
                        file,
                        "table file names are kebab-case (a-z, 0-9, -)".into(),
                    ));
                }
                let mut table: Table = parse_toml(file, &text)?;
                for (key, value) in table.map.iter_mut() {
                    placeholders.extend(unmark(
                        file,
                        &text,
                        (key.as_str(), format!("map.{key}")),
                        value,
                    ));
                }
                if let Some(default) = table.default.as_mut() {
                    placeholders.extend(unmark(
                        file,
                        &text,
                        ("default", "default".into()),
                        default,
                    ));
                }
                for (key, value) in &table.map {
                    if key.trim().is_empty() || value.trim().is_empty() {
                        return Err(MappingError {
                            file: file.clone(),
                            line: line_of_key(&text, key),
                            key: Some(format!("map.{key}")),
                            message: "keys and values must not be empty".into(),
                        });
                    }
                }
                outside.extend(outside_allowed(file, &text, &table));
                tables.insert(stem, table);
            }
        }
        let deployment = deployment.ok_or_else(|| {
            err(
                &dir.join(DEPLOYMENT_FILE),
                "missing: every mapping folder needs deployment.toml".into(),
            )
        })?;
        let sharing = sharing_text
            .map(|(file, text)| {
                Sharing::parse(&file, &text, &tables, &deployment.deployment.design).map(Arc::new)
            })
            .transpose()?;
        let job_json = serde_json::json!({
            "deployment": deployment.deployment,
            "shipping_processes": deployment.shipping_processes,
            "tables": tables,
        })
        .to_string();
        Ok(Self {
            dir: dir.to_path_buf(),
            deployment: deployment.deployment,
            shipping_processes: deployment.shipping_processes,
            tables,
            content_hash: hex::encode(hasher.finalize()),
            placeholders,
            sharing,
            jobs: job_choices,
            job_json: Arc::new(job_json),
        })
    }

    /// The job that serves `flow` in this deployment: the one `[jobs]`
    /// names, else the flow's own (named as the flow).
    pub fn job_for<'a>(&'a self, flow: &'a str) -> &'a str {
        self.job_choice(flow).map_or(flow, |c| c.job.as_str())
    }

    /// The `[jobs]` entry of `flow`, if the deployment has one.
    pub fn job_choice(&self, flow: &str) -> Option<&JobChoice> {
        self.jobs.iter().find(|c| c.flow == flow)
    }

    /// Whether `other` serves the same flows with the same jobs.
    pub fn same_jobs(&self, other: &MappingSet) -> bool {
        let pairs = |s: &MappingSet| {
            s.jobs
                .iter()
                .map(|c| (c.flow.clone(), c.job.clone()))
                .collect::<Vec<_>>()
        };
        pairs(self) == pairs(other)
    }

    /// A problem with a `[jobs]` entry found outside this crate (the job is
    /// not built, serves another flow): located at the entry.
    pub fn job_choice_error(&self, choice: &JobChoice, message: String) -> MappingError {
        MappingError {
            file: self.dir.join(DEPLOYMENT_FILE),
            line: choice.line,
            key: Some(format!("{}.\"{}\"", jobs::JOBS_TABLE, choice.flow)),
            message,
        }
    }

    /// Why this set must not go live, when it still holds placeholders:
    /// each one (file, line, key) and what to do.
    pub fn placeholder_refusal(&self) -> Option<String> {
        if self.placeholders.is_empty() {
            return None;
        }
        let list: Vec<String> = self.placeholders.iter().map(|p| p.to_string()).collect();
        Some(format!(
            "{} placeholder value(s) marked `{PLACEHOLDER_MARK}` in {}:\n  {}\nReplace each with the deployment's confirmed value; \
             only a test or demo against the simulators may allow them (`[jobs] allow_placeholders = true`)",
            list.len(),
            self.dir.display(),
            list.join("\n  ")
        ))
    }

    /// The JSON handed to a job's `configure`.
    pub fn job_json(&self) -> Arc<String> {
        self.job_json.clone()
    }

    /// Tables in this folder that none of `read` (the tables the deployment's
    /// jobs declare) uses: a misspelt file name, or a table for another design.
    pub fn unknown_tables(&self, read: &std::collections::BTreeSet<String>) -> Vec<MappingError> {
        self.tables
            .keys()
            .filter(|t| !read.contains(*t))
            .map(|t| MappingError {
                file: self.dir.join(format!("{t}.toml")),
                line: None,
                key: None,
                message: format!(
                    "unknown table `{t}`: no {} job reads it (tables the jobs read: {})",
                    self.deployment.design,
                    read.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
            .collect()
    }

    /// Tables a job needs that this set lacks.
    pub fn missing_tables<'a>(&self, needed: &'a [String]) -> Vec<&'a str> {
        needed
            .iter()
            .filter(|t| !self.tables.contains_key(t.as_str()))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const DEPLOYMENT: &str = "[deployment]\ncountry = \"Testland\"\ndesign = \"ping\"\n";

    #[test]
    fn loads_tables_and_deployment() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            (
                "inbound-sex.toml",
                "description = \"sex codes\"\n[map]\n\"125080000\" = \"female\"\n",
            ),
        ]);
        let set = MappingSet::load_dir(dir.path()).unwrap();
        assert_eq!(set.tables["inbound-sex"].get("125080000"), Some("female"));
        assert_eq!(set.tables["inbound-sex"].get("x"), None);
        let json: serde_json::Value = serde_json::from_str(&set.job_json()).unwrap();
        assert_eq!(json["tables"]["inbound-sex"]["map"]["125080000"], "female");
        assert_eq!(json["deployment"]["country"], "Testland");
    }

    #[test]
    fn duplicate_key_names_file_and_line() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            (
                "inbound-languages.toml",
                "description = \"x\"\n[map]\n\"Nuer\" = \"language2\"\n\"Nuer\" = \"language3\"\n",
            ),
        ]);
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert!(e.file.ends_with("inbound-languages.toml"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            (
                "inbound-sex.toml",
                "description = \"x\"\ndefualt = \"female\"\n[map]\n",
            ),
        ]);
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("defualt"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn wrong_types_syntax_errors_and_bad_bytes_name_line_and_key() {
        for (text, line, key) in [
            ("description = \"x\"\n[map]\n\"Nuer\" = 2\n", 3, "map.Nuer"),
            ("description = 5\n[map]\n", 1, "description"),
            (
                "description = \"x\"\n[map]\n\"Nuer\" = \"a\n",
                3,
                "map.Nuer",
            ),
            ("description = \"x\"\n[map\n", 2, "map"),
        ] {
            let dir = folder(&[(DEPLOYMENT_FILE, DEPLOYMENT), ("languages.toml", text)]);
            let e = MappingSet::load_dir(dir.path()).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
        }
        let dir = folder(&[(DEPLOYMENT_FILE, DEPLOYMENT)]);
        std::fs::write(
            dir.path().join("languages.toml"),
            b"description = \"x\"\n[map]\n\"Nuer\" = \"\xff\"\n",
        )
        .unwrap();
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("map.Nuer")),
            "{e}"
        );
    }

    #[test]
    fn a_value_outside_the_declared_values_points_nowhere() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            (
                "inbound-sex.toml",
                "description = \"x\"\nvalues = [\"female\", \"male\"]\n[map]\n\"125080000\" = \"female\"\n\"125080001\" = \"mael\"\n",
            ),
        ]);
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("map.125080001"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("mael"), "{e}");
    }

    #[test]
    fn every_entry_outside_the_declared_keys_and_values_is_named() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            (
                "inbound-sex.toml",
                "description = \"x\"\nkeys = [\"125080000\", \"125080001\"]\n[map]\n\"125080000\" = \"female\"\n\"12508001\" = \"male\"\n\"125080010\" = \"male\"\n",
            ),
            (
                "outbound-sex-dtp.toml",
                "description = \"x\"\ndefault = \"unknwn\"\nvalues = [\"female\", \"male\", \"unknown\"]\n[map]\n\"female\" = \"femal\"\n\"male\" = \"male\"\n",
            ),
        ]);
        let all = MappingSet::check_dir(dir.path()).unwrap_err();
        let found: Vec<(String, Option<usize>, Option<&str>)> = all
            .iter()
            .map(|e| {
                let file = e.file.file_name().unwrap().to_string_lossy().into_owned();
                (file, e.line, e.key.as_deref())
            })
            .collect();
        assert_eq!(
            found,
            [
                ("inbound-sex.toml".into(), Some(5), Some("map.12508001")),
                ("inbound-sex.toml".into(), Some(6), Some("map.125080010")),
                ("outbound-sex-dtp.toml".into(), Some(2), Some("default")),
                ("outbound-sex-dtp.toml".into(), Some(5), Some("map.female")),
            ],
            "{all:?}"
        );
        assert!(all[0]
            .message
            .contains("`12508001` is not one of the table's `keys`"));
        assert!(all[3]
            .message
            .contains("`femal` is not one of the table's `values`"));
        // load_dir (a start, a reload) refuses the folder and says there is more.
        let first = MappingSet::load_dir(dir.path()).unwrap_err();
        assert_eq!(first.key.as_deref(), Some("map.12508001"));
        assert!(first.message.contains("and 3 more"), "{first}");
    }

    #[test]
    fn a_map_key_spelt_like_a_table_key_is_found_in_the_map() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            (
                "labels.toml",
                "description = \"x\"\nkeys = [\"default\"]\n[map]\n\"default\" = \"a\"\nvalues = \"b\"\n",
            ),
        ]);
        let all = MappingSet::check_dir(dir.path()).unwrap_err();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(
            (all[0].line, all[0].key.as_deref()),
            (Some(5), Some("map.values"))
        );
    }

    #[test]
    fn a_typo_in_a_shipped_table_is_caught_by_its_declared_codes() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings");
        // (folder, table, the line as shipped, the same line mistyped, the key reported)
        for (country, table, good, typo, key) in [
            (
                "kenya-dadaab",
                "inbound-sex",
                "\"125080001\" = \"male\"",
                "\"12508001\" = \"male\"",
                "map.12508001",
            ),
            (
                "kenya-dadaab",
                "outbound-service-guids",
                "\"medical\" = \"f98e1516-0406-e611-80d9-00155d34051a\"",
                "\"medical\" = \"f98e1516-0406-e611-80d9-00155d34015a\"",
                "map.medical",
            ),
            (
                "kenya-dadaab",
                "decision-transfer-status",
                "\"rejected\" = \"125080004\"",
                "\"rejected\" = \"125800004\"",
                "map.rejected",
            ),
            (
                "ethiopia-gambella",
                "inbound-review-decision",
                "\"125080001\" = \"rejected\"",
                "\"125080011\" = \"rejected\"",
                "map.125080011",
            ),
            (
                "ethiopia-gambella",
                "outbound-sex-dtp",
                "\"other_b25f252\" = \"other\"",
                "\"other_b25f252\" = \"othr\"",
                "map.other_b25f252",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(shipped.join(country)).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
            // As shipped, the folder passes.
            MappingSet::check_dir(dir.path()).unwrap();
            let file = dir.path().join(format!("{table}.toml"));
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains(good), "{country}/{table}");
            std::fs::write(&file, text.replace(good, typo)).unwrap();
            let all = MappingSet::check_dir(dir.path()).unwrap_err();
            assert_eq!(all.len(), 1, "{country}/{table}: {all:?}");
            assert!(all[0].file.ends_with(format!("{table}.toml")));
            assert_eq!(all[0].key.as_deref(), Some(key), "{country}/{table}");
            let line = text.lines().position(|l| l == good).unwrap() + 1;
            assert_eq!(all[0].line, Some(line), "{country}/{table}");
        }
    }

    #[test]
    fn a_table_no_job_reads_is_unknown() {
        let dir = folder(&[
            (DEPLOYMENT_FILE, DEPLOYMENT),
            ("inbound-sex.toml", "description = \"x\"\n[map]\n"),
            ("inbound-sexx.toml", "description = \"x\"\n[map]\n"),
        ]);
        let set = MappingSet::load_dir(dir.path()).unwrap();
        let read = ["inbound-sex".to_string()].into_iter().collect();
        let errors = set.unknown_tables(&read);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].file.ends_with("inbound-sexx.toml"));
        assert!(
            errors[0].message.contains("unknown table `inbound-sexx`"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn missing_deployment_is_an_error() {
        let dir = folder(&[("inbound-sex.toml", "description = \"x\"\n[map]\n")]);
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert!(e.file.ends_with(DEPLOYMENT_FILE));
    }

    #[test]
    fn bad_design_names_the_key() {
        let dir = folder(&[(
            DEPLOYMENT_FILE,
            "[deployment]\ncountry = \"T\"\ndesign = \"fax\"\n",
        )]);
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("deployment.design"));
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn placeholders_are_named_by_file_line_and_key_and_the_mark_is_taken_off() {
        let dir = folder(&[(
            "deployment.toml",
            "[deployment]\ncountry = \"X\"\ndesign = \"ping\"\nadmin_email = \"CHANGE-ME: notavailable@primero.org\"\n",
        )]);
        let set = MappingSet::load_dir(dir.path()).unwrap();
        assert_eq!(
            set.deployment.admin_email.as_deref(),
            Some("notavailable@primero.org")
        );
        assert_eq!(set.placeholders.len(), 1);
        let p = set.placeholders[0].to_string();
        assert!(
            p.contains("deployment.toml:4") && p.contains("deployment.admin_email"),
            "{p}"
        );
        assert!(set.placeholder_refusal().is_some());
    }

    #[test]
    fn jobs_names_the_variant_serving_a_flow() {
        let dir = folder(&[(
            DEPLOYMENT_FILE,
            &format!("{DEPLOYMENT}\n[jobs]\n\"ping-1.1\" = \"ping-1.1-kakuma\"\n"),
        )]);
        let set = MappingSet::load_dir(dir.path()).unwrap();
        assert_eq!(set.job_for("ping-1.1"), "ping-1.1-kakuma");
        assert_eq!(set.job_for("ping-2.1"), "ping-2.1");
        let choice = set.job_choice("ping-1.1").unwrap();
        assert_eq!(choice.line, Some(6));
        let e = set.job_choice_error(choice, "not built".into()).to_string();
        assert!(
            e.ends_with("deployment.toml:6: key `jobs.\"ping-1.1\"`: not built"),
            "{e}"
        );
        // Not handed to jobs.
        assert!(!set.job_json().contains("kakuma"));

        let without = folder(&[(DEPLOYMENT_FILE, DEPLOYMENT)]);
        let plain = MappingSet::load_dir(without.path()).unwrap();
        assert!(plain.jobs.is_empty());
        assert!(!plain.same_jobs(&set));
        assert!(set.same_jobs(&MappingSet::load_dir(dir.path()).unwrap()));
    }

    #[test]
    fn a_wrong_jobs_entry_names_line_and_key() {
        for (entry, line, key, says) in [
            (
                "\"ping-1.3\" = \"x\"",
                6,
                "jobs.\"ping-1.3\"",
                "unknown flow `ping-1.3`; flows of the ping design: ping-1.1, ping-1.2, ping-2.1, ping-2.2",
            ),
            (
                "\"dtp-1.1\" = \"dtp-1.1-x\"",
                6,
                "jobs.\"dtp-1.1\"",
                "belongs to the dtp design; this deployment uses the ping design",
            ),
            (
                "\"ping-1.1\" = \"Ping 1.1\"",
                6,
                "jobs.\"ping-1.1\"",
                "`Ping 1.1` is not a job name",
            ),
            ("\"ping-1.1\" = 3", 6, "jobs.\"ping-1.1\"", "job name in quotes (found: integer)"),
            (
                "ping-1.1 = \"ping-1.1-kakuma\"",
                6,
                "jobs.\"ping-1\"",
                "write it in quotes: \"ping-1.1\" = \"ping-1.1-kakuma\"",
            ),
        ] {
            let dir = folder(&[(
                DEPLOYMENT_FILE,
                &format!("{DEPLOYMENT}\n[jobs]\n{entry}\n"),
            )]);
            let e = MappingSet::load_dir(dir.path()).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some(key)),
                "{entry}: {e}"
            );
            assert!(e.message.contains(says), "{entry}: {e}");
        }
        // A flow twice is TOML's duplicate key.
        let dir = folder(&[(
            DEPLOYMENT_FILE,
            &format!("{DEPLOYMENT}\n[jobs]\n\"ping-1.1\" = \"a\"\n\"ping-1.1\" = \"b\"\n"),
        )]);
        let e = MappingSet::load_dir(dir.path()).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn the_shipped_folders_mark_their_admin_contact_as_placeholders() {
        for country in ["kenya-dadaab", "ethiopia-gambella"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../mappings")
                .join(country);
            let set = MappingSet::load_dir(&dir).unwrap();
            let keys: Vec<String> = set
                .placeholders
                .iter()
                .filter_map(|p| p.key.clone())
                .collect();
            for key in ["admin_email", "admin_name", "admin_position", "admin_phone"] {
                assert!(
                    keys.contains(&format!("deployment.{key}")),
                    "{country}: {keys:?}"
                );
            }
            assert!(!set.job_json().contains(PLACEHOLDER_MARK), "{country}");
        }
    }
}

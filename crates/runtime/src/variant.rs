//! `bridge job new <name> --from <job>`: a variant of a job, for a country
//! whose rules differ beyond its tables (a field it requires, a filter).
//!
//! The variant is a copy of the job's folder (code and fixtures) under a new
//! name: `describe()` gives the new name, the same flow, and version 0.1.0;
//! a note at the top of `index.js` says where it came from. Being a folder
//! `jobs/<name>/` with an `index.js` makes it a job like any other: `bridge
//! jobs build <name>` builds it, `npm test` runs its fixtures. It serves a
//! flow only in a deployment whose `deployment.toml` names it under `[jobs]`
//! (`reload::serving_of`).

use std::path::{Path, PathBuf};

use super::fixtures::{FixtureSettings, FIXTURES_DIR, SETTINGS_FILE};
use super::toolchain::{ProjectDirs, ToolchainError};

/// The version a new variant starts at.
pub const FIRST_VERSION: &str = "0.1.0";

/// Folders of `jobs/` that are not jobs.
const NOT_JOBS: &[&str] = &["lib", "test", "dist", "node_modules", "reproducible"];

#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error("`{0}` is not a job name: use lowercase letters, digits, `.`, `_` and `-` (at most 64), e.g. ping-1.1-kakuma")]
    BadName(String),
    #[error("`{0}` is a folder of jobs/ that is not a job: choose another name")]
    Reserved(String),
    #[error("a job named `{name}` exists already ({dir}): choose another name, or edit that one")]
    Exists { name: String, dir: PathBuf },
    #[error("no job named `{from}` to make a variant of (known jobs: {known})")]
    UnknownSource { from: String, known: String },
    #[error("{path}: {reason}; nothing was created")]
    Source { path: PathBuf, reason: String },
    #[error("--mappings {dir}: not a folder of {mappings}; the fixtures' mapping folder is one of the project's (`npm test` reads it from there)")]
    Mappings { dir: PathBuf, mappings: PathBuf },
    #[error(transparent)]
    Fixtures(#[from] super::fixtures::FixtureError),
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`scaffold`] made.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub dir: PathBuf,
    /// The job it was made from, and that job's version then.
    pub from: String,
    pub from_version: String,
    /// The flow both serve.
    pub flow: String,
    /// Fixtures copied, and the mapping folder they are written for.
    pub fixtures: usize,
    pub fixture_mappings: String,
}

/// Make `jobs/<name>/` from `jobs/<from>/`. With `mappings` (a folder of the
/// project's `mappings/`), the fixtures are written for that folder from
/// now on (`fixtures/fixtures.json`). Nothing is left behind on failure.
pub fn scaffold(
    project: &ProjectDirs,
    name: &str,
    from: &str,
    mappings: Option<&Path>,
) -> Result<Variant, VariantError> {
    if !bridge_mappings::jobs::is_job_name(name) {
        return Err(VariantError::BadName(name.to_string()));
    }
    if NOT_JOBS.contains(&name) {
        return Err(VariantError::Reserved(name.to_string()));
    }
    let known = project.job_names()?;
    if !known.iter().any(|k| k == from) {
        return Err(VariantError::UnknownSource {
            from: from.to_string(),
            known: known.join(", "),
        });
    }
    let jobs = project.jobs_src();
    let dir = jobs.join(name);
    if dir.symlink_metadata().is_ok() {
        return Err(VariantError::Exists {
            name: name.to_string(),
            dir,
        });
    }
    let country = mappings.map(|m| mapping_name(project, m)).transpose()?;
    let source_dir = jobs.join(from);
    let index = source_dir.join("index.js");
    let code = std::fs::read_to_string(&index).map_err(|source| VariantError::Io {
        path: index.clone(),
        source,
    })?;
    let (code, described) = renamed(&code, from, name).map_err(|reason| VariantError::Source {
        path: index.clone(),
        reason,
    })?;

    // Copied beside the target under a dot name (not a job), then renamed:
    // a failure leaves no half-made job.
    let staging = jobs.join(format!(".new-{name}-{}", std::process::id()));
    let made = (|| {
        copy_dir(&source_dir, &staging)?;
        write(&staging.join("index.js"), &code)?;
        if let Some(country) = &country {
            set_fixture_mappings(&staging, country)?;
        }
        std::fs::rename(&staging, &dir).map_err(|source| VariantError::Io {
            path: dir.clone(),
            source,
        })
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let fixtures = super::fixtures::fixtures_of(&dir)?.len();
    let fixture_mappings = FixtureSettings::of_job(&dir)?.mappings;
    Ok(Variant {
        name: name.to_string(),
        dir,
        from: from.to_string(),
        from_version: described.version,
        flow: described.flow,
        fixtures,
        fixture_mappings,
    })
}

/// What `defineJob({...})` of a job's `index.js` says.
struct Described {
    version: String,
    flow: String,
}

/// The value of the one `key: '…'` (or `"…"`) of `code`.
fn literal(code: &str, key: &str) -> Result<(std::ops::Range<usize>, String), String> {
    let mut found = Vec::new();
    for quote in ['\'', '"'] {
        let opening = format!("{key}: {quote}");
        for (at, _) in code.match_indices(&opening) {
            // A key of its own, not the end of another (`tables`, `myname`).
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let start = at + opening.len();
            if let Some(len) = code[start..].find(quote) {
                found.push((start..start + len, code[start..start + len].to_string()));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no `{key}: '…'` in the job's defineJob({{…}}): a variant is made from a job written with defineJob (jobs/README.md)"
        )),
        n => Err(format!(
            "`{key}: '…'` appears {n} times; expected once, in defineJob({{…}})"
        )),
    }
}

/// `code` with the job's name changed to `name`, its version reset, and a
/// note of where it came from; and what the source job described.
fn renamed(code: &str, from: &str, name: &str) -> Result<(String, Described), String> {
    let (name_at, old_name) = literal(code, "name")?;
    if old_name != from {
        return Err(format!(
            "defineJob names the job `{old_name}`, not `{from}` (a job's name is its folder's)"
        ));
    }
    let (version_at, version) = literal(code, "version")?;
    let (_, flow) = literal(code, "flow")?;
    let mut out = code.to_string();
    // The later range first, so the earlier one stays where it is.
    let mut edits = [(name_at, name), (version_at, FIRST_VERSION)];
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    for (range, text) in edits {
        out.replace_range(range, text);
    }
    let note = format!(
        "// Variant of the job `{from}` (version {version}) for flow {flow}, made with\n\
         // `bridge job new {name} --from {from}`. It serves the flow only where a\n\
         // deployment names it in deployment.toml: [jobs] \"{flow}\" = \"{name}\".\n\
         // What differs from `{from}`, and why: (say it here for the reviewer).\n\
         //\n"
    );
    Ok((format!("{note}{out}"), Described { version, flow }))
}

/// The name, in the project's `mappings/`, of the folder `dir`.
fn mapping_name(project: &ProjectDirs, dir: &Path) -> Result<String, VariantError> {
    let all = project.root.join("mappings");
    let refused = || VariantError::Mappings {
        dir: dir.to_path_buf(),
        mappings: all.clone(),
    };
    let dir = dir.canonicalize().map_err(|_| refused())?;
    let parent = all.canonicalize().map_err(|_| refused())?;
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n))
            if p == parent && dir.join(bridge_mappings::DEPLOYMENT_FILE).is_file() =>
        {
            Ok(n.to_string_lossy().into_owned())
        }
        _ => Err(refused()),
    }
}

/// `fixtures/fixtures.json` of the job in `dir` with `mappings` set (the
/// file's other settings kept).
fn set_fixture_mappings(dir: &Path, mappings: &str) -> Result<(), VariantError> {
    let path = dir.join(FIXTURES_DIR).join(SETTINGS_FILE);
    let mut settings = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| VariantError::Source {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        Err(_) => serde_json::json!({}),
    };
    let Some(object) = settings.as_object_mut() else {
        return Err(VariantError::Source {
            path,
            reason: "is not a JSON object".into(),
        });
    };
    object.insert("mappings".into(), mappings.into());
    std::fs::create_dir_all(dir.join(FIXTURES_DIR)).map_err(|source| VariantError::Io {
        path: dir.join(FIXTURES_DIR),
        source,
    })?;
    let text = serde_json::to_string(&settings).expect("a JSON value serializes");
    write(&path, &format!("{text}\n"))
}

fn write(path: &Path, text: &str) -> Result<(), VariantError> {
    std::fs::write(path, text).map_err(|source| VariantError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), VariantError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VariantError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(io(&path))?.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "export const { describe, configure, run, runBatch } = defineJob({\n  name: 'ping-1.1',\n  version: '0.3.2',\n  flow: 'ping-1.1',\n  tables: INBOUND_TABLES,\n});\n";

    fn project() -> (tempfile::TempDir, ProjectDirs) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("wit")).unwrap();
        std::fs::write(root.join("wit/job.wit"), "").unwrap();
        let job = root.join("jobs/ping-1.1");
        std::fs::create_dir_all(job.join("fixtures")).unwrap();
        std::fs::write(job.join("index.js"), JOB).unwrap();
        std::fs::write(job.join("fixtures/a.record.json"), "{}").unwrap();
        std::fs::write(
            job.join("fixtures/a.expected.json"),
            r#"{"outcome":"skip","reason":"x"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(root.join("jobs/lib")).unwrap();
        for country in ["kenya-dadaab", "kenya-kakuma"] {
            let dir = root.join("mappings").join(country);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("deployment.toml"), "").unwrap();
        }
        (tmp, ProjectDirs { root })
    }

    #[test]
    fn a_variant_is_the_job_renamed_with_its_fixtures() {
        let (_tmp, project) = project();
        let kakuma = project.root.join("mappings/kenya-kakuma");
        let v = scaffold(&project, "ping-1.1-kakuma", "ping-1.1", Some(&kakuma)).unwrap();
        assert_eq!(
            (v.flow.as_str(), v.from_version.as_str(), v.fixtures),
            ("ping-1.1", "0.3.2", 1)
        );
        assert_eq!(v.fixture_mappings, "kenya-kakuma");
        let code = std::fs::read_to_string(v.dir.join("index.js")).unwrap();
        assert!(code.contains("name: 'ping-1.1-kakuma',"), "{code}");
        assert!(code.contains("version: '0.1.0',"), "{code}");
        assert!(code.contains("flow: 'ping-1.1',"), "{code}");
        assert!(code.starts_with("// Variant of the job `ping-1.1` (version 0.3.2)"));
        assert!(code.contains("[jobs] \"ping-1.1\" = \"ping-1.1-kakuma\""));
        assert!(v.dir.join("fixtures/a.expected.json").is_file());
        assert_eq!(
            project.job_names().unwrap(),
            ["ping-1.1", "ping-1.1-kakuma"]
        );
        // The source is untouched.
        assert_eq!(
            std::fs::read_to_string(project.jobs_src().join("ping-1.1/index.js")).unwrap(),
            JOB
        );
    }

    #[test]
    fn existing_names_unknown_sources_and_bad_names_are_refused() {
        let (_tmp, project) = project();
        let e = scaffold(&project, "ping-1.1", "ping-1.1", None).unwrap_err();
        assert!(matches!(e, VariantError::Exists { .. }), "{e}");
        let e = scaffold(&project, "ping-1.1-x", "ping-9.9", None).unwrap_err();
        assert!(
            e.to_string().contains("no job named `ping-9.9`") && e.to_string().contains("ping-1.1"),
            "{e}"
        );
        let e = scaffold(&project, "Ping 1.1", "ping-1.1", None).unwrap_err();
        assert!(matches!(e, VariantError::BadName(_)), "{e}");
        let e = scaffold(&project, "lib", "ping-1.1", None).unwrap_err();
        assert!(
            matches!(e, VariantError::Exists { .. } | VariantError::Reserved(_)),
            "{e}"
        );
        let outside = tempfile::tempdir().unwrap();
        let e = scaffold(&project, "ping-1.1-y", "ping-1.1", Some(outside.path())).unwrap_err();
        assert!(matches!(e, VariantError::Mappings { .. }), "{e}");
        // Nothing was left behind.
        assert_eq!(project.job_names().unwrap(), ["ping-1.1"]);
        assert_eq!(
            std::fs::read_dir(project.jobs_src()).unwrap().count(),
            2,
            "only ping-1.1 and lib"
        );
    }

    #[test]
    fn every_shipped_job_can_be_made_a_variant_of() {
        let jobs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs");
        let project = ProjectDirs {
            root: jobs.parent().unwrap().to_path_buf(),
        };
        for job in project.job_names().unwrap() {
            let code = std::fs::read_to_string(jobs.join(&job).join("index.js")).unwrap();
            let (out, described) = renamed(&code, &job, "x-variant").unwrap();
            assert_eq!(described.flow, job, "{job}");
            assert!(out.contains("name: 'x-variant'"), "{job}");
            assert_eq!(
                out.matches(&format!("'{job}'")).count(),
                1,
                "{job}: only the flow"
            );
        }
    }

    #[test]
    fn a_job_not_written_with_define_job_is_refused() {
        let (_tmp, project) = project();
        std::fs::write(
            project.jobs_src().join("ping-1.1/index.js"),
            "export function describe() { return { name: 'ping-1.1' }; }\n",
        )
        .unwrap();
        let e = scaffold(&project, "ping-1.1-z", "ping-1.1", None).unwrap_err();
        assert!(e.to_string().contains("no `version: '…'`"), "{e}");
        assert!(!project.jobs_src().join("ping-1.1-z").exists());
    }
}

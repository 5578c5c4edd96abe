//! `[jobs]` of `deployment.toml`: the flows a deployment serves with a job of
//! its own (a variant, made with `bridge job new <name> --from <job>`) in
//! place of the flow's shared job.
//!
//! ```toml
//! [jobs]
//! "ping-1.1" = "ping-1.1-kakuma"   # flow = the job that serves it here
//! ```
//!
//! This crate checks what the folder alone can tell: each key is a flow of
//! the deployment's design, each value a job name. That the job is built and
//! serves that flow is checked where the components are loaded
//! (`bridge_runtime::reload`), with errors pointing back here.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::sharing::{flow_writes, FLOWS};
use super::{line_of, MappingError};

/// The table name in `deployment.toml`.
pub const JOBS_TABLE: &str = "jobs";

/// One `[jobs]` entry: `flow` is served by `job` instead of its own job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobChoice {
    pub flow: String,
    pub job: String,
    /// Where the entry is in `deployment.toml`, for errors found later.
    pub line: Option<usize>,
}

/// The `[jobs]` table as TOML gives it: values are checked here, so that a
/// dotted key written without quotes gets a message of its own.
pub(crate) type RawJobs = BTreeMap<Spanned<String>, toml::Value>;

/// Whether `name` can name a job: a folder `jobs/<name>/` and a component
/// `<name>.wasm` (lowercase letters, digits, `.`, `_`, `-`; at most 64).
pub fn is_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= 64
}

/// The entries of `[jobs]`, in flow order; the first problem names the
/// file, the line and the key.
pub(crate) fn parse(
    file: &Path,
    text: &str,
    raw: RawJobs,
    design: &str,
) -> Result<Vec<JobChoice>, MappingError> {
    let mut out = Vec::new();
    for (flow, job) in raw {
        let line = Some(line_of(text, flow.span().start));
        let key = format!("{JOBS_TABLE}.\"{}\"", flow.get_ref());
        let error = |message: String| MappingError {
            file: file.to_path_buf(),
            line,
            key: Some(key.clone()),
            message,
        };
        let flow = flow.into_inner();
        let job = match job {
            toml::Value::String(job) => job,
            toml::Value::Table(table) => {
                // `ping-1.1 = "…"` without quotes is the key `ping-1`
                // holding a table `1`.
                let example = match table.iter().next() {
                    Some((rest, toml::Value::String(job))) if table.len() == 1 => {
                        format!("\"{flow}.{rest}\" = \"{job}\"")
                    }
                    _ => "\"ping-1.1\" = \"ping-1.1-<country>\"".to_string(),
                };
                return Err(error(format!(
                    "is a table, not a job name: a flow's name holds a `.`, so write it in quotes: {example}"
                )));
            }
            other => {
                return Err(error(format!(
                    "must be a job name in quotes (found: {})",
                    other.type_str()
                )))
            }
        };
        match flow_writes(&flow) {
            None => {
                return Err(error(format!(
                    "unknown flow `{flow}`; flows of the {design} design: {}",
                    design_flows(design)
                )))
            }
            Some(known) if known.design != design => {
                return Err(error(format!(
                    "flow `{flow}` belongs to the {} design; this deployment uses the {design} design (its flows: {})",
                    known.design,
                    design_flows(design)
                )))
            }
            Some(_) => {}
        }
        if !is_job_name(&job) {
            return Err(error(format!(
                "`{job}` is not a job name: a job is a folder jobs/<name>/ named with lowercase letters, digits, `.`, `_` and `-`"
            )));
        }
        out.push(JobChoice { flow, job, line });
    }
    Ok(out)
}

fn design_flows(design: &str) -> String {
    FLOWS
        .iter()
        .filter(|f| f.design == design)
        .map(|f| f.flow)
        .collect::<Vec<_>>()
        .join(", ")
}

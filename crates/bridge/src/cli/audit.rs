//! `bridge audit verify | list | export | prune`: the audit trail of every
//! share (docs/auditor/audit-trail.md). Verify, list and export only read
//! the state database (they work while the service runs); prune writes and,
//! like every writer, is refused while another process holds the database.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use bridge_store::{AuditFilter, AuditRecord, AuditVerification, Holder, OpenMode, Store};

use super::ops::open_store;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain: exit 0 when intact, 1 naming the first changed, removed or reordered entry.
    Verify {
        /// The deployment's bridge.toml (its [state] database is read).
        #[arg(long)]
        config: PathBuf,
        /// A head noted down earlier (`SEQ:HASH`, as printed here): also check the trail still holds it.
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The entries as a table, newest first.
    List {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// The entries for auditors, oldest first, with the chain fields (`prev_hash`, `hash`).
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many entries (the oldest matching).
        #[arg(long)]
        limit: Option<i64>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove the entries older than a date (the rest stays verifiable).
    Prune {
        #[arg(long)]
        config: PathBuf,
        /// RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z.
        #[arg(long)]
        before: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// From this time on (RFC 3339, inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Only this flow's entries.
    #[arg(long)]
    flow: Option<String>,
    /// Only this Primero case (record id).
    #[arg(long = "case")]
    case_id: Option<String>,
}

impl FilterArgs {
    fn filter(self, limit: Option<i64>, newest_first: bool) -> AuditFilter {
        AuditFilter {
            from: self.from,
            to: self.to,
            flow: self.flow,
            case_id: self.case_id,
            limit,
            newest_first,
            ..AuditFilter::default()
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, with a header row (RFC 4180 quoting).
    Csv,
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { config, head, json } => {
            let noted = head.as_deref().map(parse_head).transpose()?;
            let store = open_store(&config, OpenMode::Existing).await?;
            let v = store.audit_verify().await?;
            let mut problems: Vec<String> = v.problem.iter().map(|p| p.to_string()).collect();
            if let Some((seq, hash)) = &noted {
                if let Some(why) = noted_head_problem(&*store, &v, *seq, hash).await? {
                    problems.push(why);
                }
            }
            if json {
                let value = serde_json::json!({
                    "ok": problems.is_empty(),
                    "verification": v,
                    "problems": problems,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_verification(&v, &problems);
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::List {
            config,
            filter,
            limit,
            json,
        } => {
            let store = open_store(&config, OpenMode::Existing).await?;
            let records = store
                .audit_list(&filter.filter(Some(limit.max(1)), true))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_table(&records);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            config,
            format,
            filter,
            limit,
            out,
        } => {
            let store = open_store(&config, OpenMode::Existing).await?;
            let records = store.audit_list(&filter.filter(limit, false)).await?;
            let text = match format {
                ExportFormat::Jsonl => jsonl(&records)?,
                ExportFormat::Csv => csv(&records),
            };
            match &out {
                Some(path) => write_file(path, &text)?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            let range = match (records.first(), records.last()) {
                (Some(a), Some(b)) => format!(" (entries {} to {})", a.seq, b.seq),
                _ => String::new(),
            };
            eprintln!("exported {} entr(y/ies){range}", records.len());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prune { config, before } => {
            let store = open_store(&config, OpenMode::Existing).await?;
            // A writer like the service: refused while it runs (it prunes
            // by itself when `[audit] retain_days` is set).
            let _lease = store.acquire_writer(&Holder::current()).await?;
            let removed = store.audit_prune(&before).await?;
            let v = store.audit_verify().await?;
            println!(
                "removed {removed} entr(y/ies) older than {before}; anchor: entry {} {}",
                v.anchor.seq, v.anchor.hash
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `SEQ:HASH` as `verify` prints it.
fn parse_head(text: &str) -> anyhow::Result<(i64, String)> {
    let (seq, hash) = text
        .split_once(':')
        .context("--head must be SEQ:HASH, as `bridge audit verify` prints it")?;
    let seq: i64 = seq
        .trim()
        .parse()
        .context("--head: SEQ must be a whole number")?;
    let hash = hash.trim().to_ascii_lowercase();
    anyhow::ensure!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "--head: HASH must be 64 hex characters"
    );
    Ok((seq, hash))
}

/// Whether the trail still holds a head noted earlier: the entry is there
/// with that hash, or it is the retention anchor. A rewritten table (every
/// hash recomputed) or a trail cut back below it fails here.
async fn noted_head_problem(
    store: &dyn Store,
    v: &AuditVerification,
    seq: i64,
    hash: &str,
) -> anyhow::Result<Option<String>> {
    if seq > v.head_seq {
        return Ok(Some(format!(
            "entry {seq} removed: the noted head is entry {seq} but the trail's head is entry {}",
            v.head_seq
        )));
    }
    if seq == v.anchor.seq {
        return Ok((v.anchor.hash != hash).then(|| {
            format!("entry {seq} changed: it is the retention anchor now, with another hash")
        }));
    }
    if seq < v.anchor.seq {
        // Pruned since: what remains links back to the anchor, checked above.
        return Ok(None);
    }
    let found = store
        .audit_list(&AuditFilter {
            seq: Some(seq),
            ..AuditFilter::default()
        })
        .await?;
    Ok(match found.first() {
        None => Some(format!(
            "entry {seq} removed: the noted head is not in the trail"
        )),
        Some(r) if r.hash != hash => Some(format!(
            "entry {seq} changed: its hash is not the one noted (the trail was rewritten)"
        )),
        Some(_) => None,
    })
}

fn print_verification(v: &AuditVerification, problems: &[String]) {
    if problems.is_empty() {
        println!("audit trail intact: {} entr(y/ies) checked", v.checked);
    } else {
        println!("audit trail NOT intact: {}", problems.join("; "));
        println!("checked before the problem: {} entr(y/ies)", v.checked);
    }
    println!("head: {}:{}", v.head_seq, v.head_hash);
    match &v.anchor.before {
        Some(before) => println!(
            "pruned before {before} (at {}): anchor {}:{}",
            v.anchor.at.as_deref().unwrap_or("-"),
            v.anchor.seq,
            v.anchor.hash
        ),
        None => println!("nothing pruned"),
    }
    if problems.is_empty() {
        println!(
            "note the head down; `bridge audit verify --head {}:{}` later shows the trail still holds it",
            v.head_seq, v.head_hash
        );
    }
}

fn dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn print_table(records: &[AuditRecord]) {
    if records.is_empty() {
        println!("no audit entries");
        return;
    }
    println!(
        "{:>7}  {:<24}  {:<9}  {:<18}  {:<15}  {:<40}  {:<40}  {:<36}  {:<16}  job",
        "seq", "at", "flow", "event", "consent", "source", "target", "case", "permitted by"
    );
    for r in records {
        let e = &r.entry;
        println!(
            "{:>7}  {:<24}  {:<9}  {:<18}  {:<15}  {:<40}  {:<40}  {:<36}  {:<16}  {} {}",
            r.seq,
            e.at,
            e.flow,
            e.event,
            e.consent,
            e.source_id,
            dash(&e.target_id),
            dash(&e.case_id),
            dash(&e.permitted_by),
            e.job,
            e.job_version
        );
    }
}

fn jsonl(records: &[AuditRecord]) -> anyhow::Result<String> {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    Ok(out)
}

/// The CSV columns, in the order of the hashed text (docs/auditor/audit-trail.md).
pub const CSV_HEADER: &str = "seq,at,flow,run_id,event,source_id,target_id,case_id,permitted_by,\
consent,job,job_version,job_hash,mappings_hash,prev_hash,hash";

fn csv(records: &[AuditRecord]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for r in records {
        let mut cells = vec![r.seq.to_string()];
        cells.extend(
            r.entry
                .fields()
                .iter()
                .map(|(_, v)| csv_cell(v.unwrap_or_default())),
        );
        cells.push(r.prev_hash.clone());
        cells.push(r.hash.clone());
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// RFC 4180: quoted when it holds a comma, a quote or white space at an end.
fn csv_cell(value: &str) -> String {
    if value.contains([',', '"']) || value.trim() != value {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_when_needed() {
        assert_eq!(csv_cell("ping-1.1"), "ping-1.1");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_cell(" x"), "\" x\"");
        assert_eq!(CSV_HEADER.split(',').count(), 16);
    }

    #[test]
    fn heads_parse_as_printed() {
        let hash = "ab".repeat(32);
        assert_eq!(parse_head(&format!("12:{hash}")).unwrap(), (12, hash));
        assert!(parse_head("12").is_err());
        assert!(parse_head("x:00").is_err());
    }
}

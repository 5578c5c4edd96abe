//! The sharing manifest: a folder's `sharing.toml` with the value tables it
//! uses, rendered as the Information Sharing Protocol's annex (Markdown for
//! people to read and sign, CSV one row per field for spreadsheets and
//! tests). Only what the host enforces is in it: the same declaration the
//! flows check every body against.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::sharing::{flow_writes, Category, Sharing, FLOWS};
use super::MappingSet;

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 9] = [
    "flow",
    "destination",
    "write",
    "path",
    "category",
    "source",
    "why",
    "tables",
    "line",
];

/// Why a folder has no manifest.
pub fn missing(set: &MappingSet) -> String {
    format!(
        "{}: missing: no flow of this folder may send anything until its data points are declared (docs/job-author/sharing.md)",
        set.dir.join(super::SHARING_FILE).display()
    )
}

/// One CSV row per declared field, in the declaration's order.
pub fn csv(sharing: &Sharing) -> String {
    let mut out = String::new();
    row(&mut out, CSV_HEADER.iter().map(|s| s.to_string()));
    for share in &sharing.shares {
        for f in &share.fields {
            row(
                &mut out,
                [
                    share.flow.clone(),
                    share.to.as_str().to_string(),
                    share.to.describe().to_string(),
                    f.path.clone(),
                    f.category.as_str().to_string(),
                    f.source.clone(),
                    f.why.clone(),
                    f.tables.join(";"),
                    f.line.to_string(),
                ],
            );
        }
    }
    out
}

fn row(out: &mut String, cells: impl IntoIterator<Item = String>) {
    let cells: Vec<String> = cells.into_iter().map(|c| csv_cell(&c)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Parse [`csv`]'s output back into rows (header included), for tests and
/// tools that read the manifest.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

/// A Markdown table cell: one line, `|` escaped.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// The annex in Markdown: the deployment and version, the consent policy,
/// each flow's data points per destination, a count per category, and the
/// contents of every mapping table the data points go through.
pub fn markdown(set: &MappingSet, sharing: &Sharing) -> String {
    let mut out = String::new();
    let d = &set.deployment;
    let _ = writeln!(
        out,
        "# Data points shared by the referral bridge: {}\n",
        md(&d.country)
    );
    let _ = writeln!(
        out,
        "Annex to the Information Sharing Protocol. Design: {} ({}). Mapping folder `{}`, version (SHA-256 of its files) `{}`.\n",
        d.design,
        if d.design == "ping" {
            "proGres through PING"
        } else {
            "proGres through DTP"
        },
        set.dir.display(),
        set.content_hash
    );
    if let Some(text) = &sharing.description {
        let _ = writeln!(out, "{}\n", text.trim());
    }
    let _ = writeln!(
        out,
        "The bridge checks every body it is about to send against this list: a field not listed here \
         for the flow and the destination is not sent, and the record is refused (`undeclared-field`). \
         A job cannot widen what is shared; only an edit of `sharing.toml` can \
         (`bridge mappings check <folder> --against <approved folder>` shows the difference).\n"
    );
    let c = &sharing.consent;
    let _ = writeln!(out, "## Consent\n");
    let _ = writeln!(
        out,
        "- Flows gated on consent: {}",
        list(c.flows.iter().map(|f| format!("`{f}`")))
    );
    let _ = writeln!(
        out,
        "- Primero case fields that must all be true: {}",
        list(c.fields.iter().map(|f| format!("`{f}`")))
    );
    let _ = writeln!(
        out,
        "- A referral whose consent was overridden (`consent_overridden`) is {}",
        if c.allow_override {
            "shared, and the override is recorded in the audit trail"
        } else {
            "not shared"
        }
    );
    let _ = writeln!(
        out,
        "- Consent carried inbound from proGres: {}\n",
        c.inbound_indicator
            .as_deref()
            .map(|f| format!("`{f}`"))
            .unwrap_or_else(|| "none (the audit records that consent was not transmitted)".into())
    );

    let mut tables_used: BTreeSet<&str> = BTreeSet::new();
    for flow in FLOWS.iter().filter(|f| f.design == d.design) {
        let _ = writeln!(out, "## Flow `{}`: {}\n", flow.flow, md(flow.title));
        let shares: Vec<_> = sharing
            .shares
            .iter()
            .filter(|s| s.flow == flow.flow)
            .collect();
        if shares.is_empty() {
            let _ = writeln!(out, "Shares nothing: every body of this flow is refused.\n");
            continue;
        }
        for share in shares {
            let _ = writeln!(
                out,
                "### To {} (`{}`)\n",
                share.to.describe(),
                share.to.as_str()
            );
            if let Some(p) = &share.purpose {
                let _ = writeln!(out, "{}\n", p);
            }
            let _ = writeln!(
                out,
                "| field | category | source | why (need to know) | mapping tables |\n|---|---|---|---|---|"
            );
            for f in &share.fields {
                tables_used.extend(f.tables.iter().map(String::as_str));
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} |",
                    md(&f.path),
                    f.category,
                    md(&f.source),
                    md(&f.why),
                    if f.tables.is_empty() {
                        "—".to_string()
                    } else {
                        list(f.tables.iter().map(|t| format!("[{t}](#table-{t})")))
                    }
                );
            }
            out.push('\n');
        }
        let unused: Vec<&str> = flow
            .writes
            .iter()
            .filter(|w| sharing.share(flow.flow, **w).is_none())
            .map(|w| w.as_str())
            .collect();
        if !unused.is_empty() {
            let _ = writeln!(
                out,
                "Sends nothing to: {}.\n",
                list(unused.iter().map(|u| format!("`{u}`")))
            );
        }
    }

    let _ = writeln!(out, "## Fields per category\n");
    let _ = writeln!(
        out,
        "| flow | {} |\n|---|{}",
        Category::ALL.map(|c| c.as_str()).join(" | "),
        "---|".repeat(Category::ALL.len())
    );
    for flow in FLOWS.iter().filter(|f| f.design == d.design) {
        let counts = Category::ALL.map(|c| {
            sharing
                .shares
                .iter()
                .filter(|s| s.flow == flow.flow)
                .flat_map(|s| &s.fields)
                .filter(|f| f.category == c)
                .count()
                .to_string()
        });
        let _ = writeln!(out, "| `{}` | {} |", flow.flow, counts.join(" | "));
    }
    out.push('\n');

    let _ = writeln!(out, "## Mapping tables\n");
    if tables_used.is_empty() {
        let _ = writeln!(out, "No declared field goes through a mapping table.\n");
    }
    for name in tables_used {
        let Some(table) = set.tables.get(name) else {
            continue;
        };
        let _ = writeln!(
            out,
            "<a id=\"table-{name}\"></a>\n### `{name}`\n\n{}\n",
            md(&table.description)
        );
        if let Some(default) = &table.default {
            let _ = writeln!(out, "A value not listed becomes `{}`.\n", md(default));
        } else {
            let _ = writeln!(out, "A value not listed is refused (no default).\n");
        }
        let _ = writeln!(out, "| from | to |\n|---|---|");
        for (from, to) in &table.map {
            let _ = writeln!(out, "| `{}` | `{}` |", md(from), md(to));
        }
        out.push('\n');
    }
    debug_assert!(FLOWS.iter().all(|f| flow_writes(f.flow).is_some()));
    out
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_read_back() {
        let mut out = String::new();
        row(
            &mut out,
            ["a", "b,c", "say \"hi\"", "two\nlines", ""].map(String::from),
        );
        row(&mut out, ["x"].map(String::from));
        assert_eq!(
            parse_csv(&out),
            vec![vec!["a", "b,c", "say \"hi\"", "two\nlines", ""], vec!["x"]]
        );
    }

    #[test]
    fn the_shipped_folders_render_every_declared_field() {
        for country in ["kenya-dadaab", "ethiopia-gambella"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../mappings")
                .join(country);
            let set = MappingSet::load_dir(&dir).unwrap();
            let sharing = set.sharing.clone().expect(country);
            let rows = parse_csv(&csv(&sharing));
            assert_eq!(rows[0], CSV_HEADER);
            let fields: usize = sharing.shares.iter().map(|s| s.fields.len()).sum();
            assert_eq!(rows.len(), fields + 1, "{country}");
            let text = markdown(&set, &sharing);
            for share in &sharing.shares {
                for f in &share.fields {
                    assert!(
                        text.contains(&format!("`{}`", md(&f.path))),
                        "{country}: {}",
                        f.path
                    );
                    for t in &f.tables {
                        assert!(text.contains(&format!("### `{t}`")), "{country}: {t}");
                    }
                }
            }
            // Every flow of the design declares what it sends.
            for flow in FLOWS.iter().filter(|f| f.design == set.deployment.design) {
                assert!(
                    sharing.shares.iter().any(|s| s.flow == flow.flow),
                    "{country}: {} declares nothing",
                    flow.flow
                );
            }
        }
    }
}

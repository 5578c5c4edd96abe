//! `bridge mappings manifest` (the ISP annex from `sharing.toml`) and the
//! declaration part of `bridge mappings check --against`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bridge_mappings::{manifest, sharing, MappingSet};

/// The manifest's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people to read and sign: every flow's data points and the tables' contents.
    Markdown,
    /// One row per field: flow, destination, write, path, category, source, why, tables, line.
    Csv,
}

/// Render the manifest of `dir` to stdout or `out`.
pub fn manifest(dir: &Path, format: Format, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let set = match MappingSet::load_dir(dir) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(sharing) = set.sharing.clone() else {
        eprintln!("error: {}", manifest::missing(&set));
        return Ok(ExitCode::FAILURE);
    };
    let text = match format {
        Format::Markdown => manifest::markdown(&set, &sharing),
        Format::Csv => manifest::csv(&sharing),
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| {
                anyhow::anyhow!("cannot write the manifest to {}: {e}", path.display())
            })?;
            eprintln!(
                "manifest of {} written to {}",
                dir.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `mappings check` says about the declaration: a warning when there is
/// none, and with `against`, how it differs from that folder's (fields
/// added, removed, changed per flow and destination). Errors: `against`
/// does not load.
pub fn report(set: &MappingSet, against: Option<&Path>) -> Result<(), String> {
    let fields = |s: &sharing::Sharing| s.shares.iter().map(|s| s.fields.len()).sum::<usize>();
    match &set.sharing {
        None => eprintln!("warning: {}", manifest::missing(set)),
        Some(s) => println!(
            "sharing.toml: {} data point(s) declared over {} flow/destination pair(s)",
            fields(s),
            s.shares.len()
        ),
    }
    let Some(against) = against else {
        return Ok(());
    };
    let other = MappingSet::load_dir(against).map_err(|e| format!("--against: {e}"))?;
    let empty = sharing::Sharing {
        file: against.join(bridge_mappings::SHARING_FILE),
        description: None,
        consent: Default::default(),
        shares: Vec::new(),
    };
    let old = other.sharing.as_deref().unwrap_or(&empty);
    let new = set.sharing.as_deref().unwrap_or(&empty);
    let changes = sharing::diff(old, new);
    if old.consent != new.consent {
        println!(
            "consent policy changed: {:?} → {:?}",
            old.consent, new.consent
        );
    }
    if changes.is_empty() {
        println!("shared data points: the same as {}", against.display());
        return Ok(());
    }
    let added: usize = changes.iter().map(|c| c.added.len()).sum();
    let removed: usize = changes.iter().map(|c| c.removed.len()).sum();
    println!(
        "shared data points against {}: {added} added (what leaves widens), {removed} removed",
        against.display()
    );
    for c in &changes {
        println!("  {} → {}", c.flow, c.to);
        for p in &c.added {
            println!("    + {p}");
        }
        for p in &c.removed {
            println!("    - {p}");
        }
        for p in &c.changed {
            println!("    ~ {p}");
        }
    }
    Ok(())
}

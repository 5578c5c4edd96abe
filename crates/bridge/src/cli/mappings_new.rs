//! `bridge mappings new <country> --from <folder>`: a mapping folder for a
//! new country, and the checklist of what to confirm in it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bridge_mappings::new_country::{self, NewCountry};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The new country's name: written as `country` in deployment.toml, and
    /// the new folder's name unless --to is given (then a-z, 0-9 and -, e.g.
    /// uganda-kiryandongo).
    country: String,
    /// The mapping folder to copy: one of the same design (PING:
    /// mappings/kenya-dadaab, DTP: mappings/ethiopia-gambella).
    #[arg(long)]
    from: PathBuf,
    /// Where to make the new folder (default: next to --from, named after
    /// the country). It must not exist.
    #[arg(long)]
    to: Option<PathBuf>,
}

/// A folder name: kebab-case, as the shipped folders are named.
fn folder_name(country: &str) -> Option<&str> {
    let ok = !country.is_empty()
        && country
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(country)
}

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    let to = match args.to {
        Some(to) => to,
        None => {
            let Some(name) = folder_name(args.country.trim()) else {
                eprintln!(
                    "error: `{}` is not a folder name (a-z, 0-9, -): name the folder with --to <folder>, or give a name such as uganda-kiryandongo",
                    args.country
                );
                return Ok(ExitCode::FAILURE);
            };
            let parent = args
                .from
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            parent.join(name)
        }
    };
    match new_country::create(&args.from, &to, &args.country) {
        Ok(made) => {
            print!("{}", checklist(&made));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn location(file: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", file.display()),
        None => file.display().to_string(),
    }
}

/// What to confirm, value by value, then the tables and the sharing declaration.
fn checklist(made: &NewCountry) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "made {} from {} (design {})\n",
        made.dir.display(),
        made.from.display(),
        made.design
    );
    let _ = writeln!(
        out,
        "Confirm each value marked CHANGE-ME (the old country's value follows the mark); `bridge mappings check` refuses the folder until every mark is replaced by the confirmed value:"
    );
    let width = made
        .to_confirm
        .iter()
        .map(|c| location(&c.file, c.line).len() + c.key.len())
        .max()
        .unwrap_or(0);
    for c in &made.to_confirm {
        let place = location(&c.file, c.line);
        let pad = width - place.len() - c.key.len();
        let _ = writeln!(
            out,
            "  {place}  {}{}  confirm with {}",
            c.key,
            " ".repeat(pad),
            c.who
        );
    }
    let _ = writeln!(
        out,
        "\nReview each table (the entries are the old country's; a partner code outside a table's `keys` or `values` is refused):"
    );
    for t in &made.tables {
        let _ = writeln!(out, "  {}: {}", t.file.display(), t.what());
    }
    if let Some(sharing) = &made.sharing {
        let _ = writeln!(
            out,
            "\nReview {} with UNHCR and the Primero administrators: the data points each flow may share, the annex of the Information Sharing Protocol (`bridge mappings manifest {}` renders it for signature).",
            sharing.display(),
            made.dir.display()
        );
    }
    let _ = writeln!(out, "\nThen: bridge mappings check {}", made.dir.display());
    out
}

#[cfg(test)]
mod tests {
    use super::folder_name;

    #[test]
    fn folder_names_are_kebab_case() {
        assert_eq!(
            folder_name("uganda-kiryandongo"),
            Some("uganda-kiryandongo")
        );
        assert_eq!(folder_name("Uganda - Kiryandongo"), None);
        assert_eq!(folder_name("../x"), None);
        assert_eq!(folder_name(""), None);
    }
}

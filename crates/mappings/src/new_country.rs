//! `bridge mappings new`: a mapping folder for a new country, copied from an
//! existing one, with every deployment value marked as a placeholder to
//! confirm, and the checklist of what to confirm and with whom.
//!
//! The copy keeps the old country's values after the mark
//! (`"CHANGE-ME: PNR-1363"`): they show the shape of what is expected, the
//! simulators accept them, and `bridge mappings check` refuses the folder
//! until each is replaced. The tables are copied as they are (their codes
//! are the partners' and mostly hold across countries) and listed for review.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{MappingError, MappingSet, DEPLOYMENT_FILE, PLACEHOLDER_MARK, SHARING_FILE};

/// Who confirms a value for the new country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmer {
    /// UNHCR: proGres, PING and DTP ids and codes.
    Unhcr,
    /// The Primero administrators: module, users, lookups.
    PrimeroAdministrators,
    /// Both: a table mapping proGres codes to Primero lookup keys.
    Both,
}

impl fmt::Display for Confirmer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confirmer::Unhcr => "UNHCR",
            Confirmer::PrimeroAdministrators => "the Primero administrators",
            Confirmer::Both => "UNHCR and the Primero administrators",
        })
    }
}

/// Who confirms a `deployment.toml` key (`deployment.partner_id`, `shipping_processes.…`).
fn deployment_confirmer(key: &str) -> Confirmer {
    match key {
        "deployment.partner_id"
        | "deployment.interop_id"
        | "deployment.business_unit"
        | "deployment.organisation_from" => Confirmer::Unhcr,
        k if k.starts_with("shipping_processes.") => Confirmer::Unhcr,
        "deployment.module_id"
        | "deployment.intake_user"
        | "deployment.unhcr_user"
        | "deployment.admin_email"
        | "deployment.admin_name"
        | "deployment.admin_position"
        | "deployment.admin_phone" => Confirmer::PrimeroAdministrators,
        _ => Confirmer::Both,
    }
}

/// One marked value the new country must confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToConfirm {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// `deployment.partner_id`, `map.legal_support`, …
    pub key: String,
    pub who: Confirmer,
}

/// Which side of a table holds partner codes, as the table declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerSide {
    /// `keys = [...]`: the left holds proGres/DTP/PING codes.
    Keys,
    /// `values = [...]`: the right holds them.
    Values,
    /// Both sides are declared.
    Both,
    /// Nothing declared.
    Undeclared,
}

/// A table the new country must review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReview {
    pub file: PathBuf,
    pub entries: usize,
    pub partner_side: PartnerSide,
    pub who: Confirmer,
}

impl TableReview {
    /// What to review, in words.
    pub fn what(&self) -> String {
        let codes = match self.partner_side {
            PartnerSide::Keys => {
                "partner codes on the left (declared in `keys`): confirm with UNHCR; the right with the Primero administrators"
            }
            PartnerSide::Values => {
                "partner codes on the right (declared in `values`): confirm with UNHCR; the left with the Primero administrators"
            }
            PartnerSide::Both => {
                "partner codes on both sides (declared in `keys` and `values`): confirm with UNHCR"
            }
            PartnerSide::Undeclared => {
                "no partner codes declared: confirm every entry with UNHCR and the Primero administrators"
            }
        };
        format!("{} entries; {codes}", self.entries)
    }
}

/// The folder made and what to confirm in it.
#[derive(Debug, Clone)]
pub struct NewCountry {
    pub dir: PathBuf,
    pub from: PathBuf,
    pub design: String,
    /// Every value marked `CHANGE-ME:`, in file and line order: what
    /// `bridge mappings check` refuses until it is replaced.
    pub to_confirm: Vec<ToConfirm>,
    pub tables: Vec<TableReview>,
    /// `sharing.toml`, when the folder has one: the data points each flow
    /// may share, for the new country's Information Sharing Protocol.
    pub sharing: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NewCountryError {
    #[error("the country name must not be empty")]
    EmptyCountry,
    #[error("{0} already exists: `bridge mappings new` makes a new folder and never writes into an existing one")]
    Exists(PathBuf),
    #[error("the folder to copy from does not load: {0}")]
    Source(MappingError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    Edit { file: PathBuf, message: String },
    #[error("the new folder does not load (please report this): {0}")]
    Result(MappingError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NewCountryError + '_ {
    move |source| NewCountryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copy the mapping folder `from` to the new folder `to` (which must not
/// exist) for `country`: `country` set, every other deployment value marked
/// `CHANGE-ME: <old value>`, the old country's name in `sharing.toml`
/// replaced. On error nothing is left behind.
pub fn create(from: &Path, to: &Path, country: &str) -> Result<NewCountry, NewCountryError> {
    let country = country.trim();
    if country.is_empty() {
        return Err(NewCountryError::EmptyCountry);
    }
    let source = MappingSet::load_dir(from).map_err(NewCountryError::Source)?;
    if to.symlink_metadata().is_ok() {
        return Err(NewCountryError::Exists(to.to_path_buf()));
    }
    std::fs::create_dir(to).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => NewCountryError::Exists(to.to_path_buf()),
        _ => NewCountryError::Io {
            path: to.to_path_buf(),
            source: e,
        },
    })?;
    let made = fill(from, to, country, &source.deployment.country);
    let made = made.and_then(|()| {
        MappingSet::load_dir(to)
            .map_err(NewCountryError::Result)
            .map(|set| checklist(from, set))
    });
    if made.is_err() {
        // Only what this call created: the folder did not exist before.
        let _ = std::fs::remove_dir_all(to);
    }
    made
}

/// Copy the files and edit `deployment.toml` and `sharing.toml`.
fn fill(from: &Path, to: &Path, country: &str, old_country: &str) -> Result<(), NewCountryError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(io(from))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in files {
        let Some(name) = file.file_name() else {
            continue;
        };
        // Editor and system files (`.foo.swp`) are not the folder's.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(name);
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        let text = if name == DEPLOYMENT_FILE {
            mark_deployment(&target, &text, country)?
        } else if name == SHARING_FILE && !old_country.trim().is_empty() {
            text.replace(old_country, country)
        } else {
            text
        };
        std::fs::write(&target, text).map_err(io(&target))?;
    }
    Ok(())
}

/// `deployment.toml` with `country` set and every other value but `design`
/// marked, comments and layout kept.
fn mark_deployment(file: &Path, text: &str, country: &str) -> Result<String, NewCountryError> {
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| NewCountryError::Edit {
                file: file.to_path_buf(),
                message: e.message().to_string(),
            })?;
    for section in ["deployment", "shipping_processes"] {
        let Some(table) = doc.get_mut(section).and_then(toml_edit::Item::as_table_mut) else {
            continue;
        };
        for (key, item) in table.iter_mut() {
            let Some(toml_edit::Value::String(value)) = item.as_value_mut() else {
                continue;
            };
            let new = match (section, key.get()) {
                ("deployment", "design") => continue,
                ("deployment", "country") => country.to_string(),
                _ if value.value().trim_start().starts_with(PLACEHOLDER_MARK) => continue,
                _ => format!("{PLACEHOLDER_MARK} {}", value.value()),
            };
            let decor = value.decor().clone();
            *value = toml_edit::Formatted::new(new);
            *value.decor_mut() = decor;
        }
    }
    Ok(doc.to_string())
}

fn table_review(file: PathBuf, table: &crate::Table) -> TableReview {
    let partner_side = match (table.keys.is_some(), table.values.is_some()) {
        (true, true) => PartnerSide::Both,
        (true, false) => PartnerSide::Keys,
        (false, true) => PartnerSide::Values,
        (false, false) => PartnerSide::Undeclared,
    };
    let who = match partner_side {
        PartnerSide::Both => Confirmer::Unhcr,
        _ => Confirmer::Both,
    };
    TableReview {
        file,
        entries: table.map.len(),
        partner_side,
        who,
    }
}

fn checklist(from: &Path, set: MappingSet) -> NewCountry {
    let tables: Vec<TableReview> = set
        .tables
        .iter()
        .map(|(name, table)| table_review(set.dir.join(format!("{name}.toml")), table))
        .collect();
    let who_of_table = |file: &Path| {
        tables
            .iter()
            .find(|t| t.file == file)
            .map(|t| t.who)
            .unwrap_or(Confirmer::Both)
    };
    let mut to_confirm: Vec<ToConfirm> = set
        .placeholders
        .iter()
        .map(|p| {
            let key = p.key.clone().unwrap_or_default();
            let who = if p.file.ends_with(DEPLOYMENT_FILE) {
                deployment_confirmer(&key)
            } else {
                who_of_table(&p.file)
            };
            ToConfirm {
                file: p.file.clone(),
                line: p.line,
                key,
                who,
            }
        })
        .collect();
    to_confirm.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    NewCountry {
        sharing: set.sharing.as_ref().map(|s| s.file.clone()),
        dir: set.dir,
        from: from.to_path_buf(),
        design: set.deployment.design,
        to_confirm,
        tables,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(country: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../mappings")
            .join(country)
    }

    #[test]
    fn every_deployment_value_is_marked_and_listed_with_who_confirms_it() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("testland-camp");
        let made = create(&shipped("kenya-dadaab"), &to, "Testland - Camp").unwrap();
        let set = MappingSet::load_dir(&to).unwrap();
        assert_eq!(set.deployment.country, "Testland - Camp");
        assert_eq!(set.deployment.design, "ping");
        // The old values stay after the mark, so the folder still works
        // against the simulators.
        assert_eq!(set.deployment.partner_id.as_deref(), Some("PNR-1363"));
        let keys: Vec<&str> = made.to_confirm.iter().map(|c| c.key.as_str()).collect();
        for key in [
            "deployment.partner_id",
            "deployment.interop_id",
            "deployment.module_id",
            "deployment.intake_user",
            "deployment.unhcr_user",
            "deployment.business_unit",
            "deployment.organisation_from",
            "deployment.admin_email",
            "shipping_processes.pending_referrals",
            "shipping_processes.decision_synced",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        assert!(!keys.contains(&"deployment.country"));
        assert!(!keys.contains(&"deployment.design"));
        // Exactly what `mappings check` refuses, each once.
        assert_eq!(made.to_confirm.len(), set.placeholders.len());
        let find = |key: &str| made.to_confirm.iter().find(|c| c.key == key).unwrap();
        let partner = find("deployment.partner_id");
        assert_eq!(partner.who, Confirmer::Unhcr);
        let text = std::fs::read_to_string(to.join(DEPLOYMENT_FILE)).unwrap();
        assert_eq!(
            text.lines().nth(partner.line.unwrap() - 1),
            Some("partner_id = \"CHANGE-ME: PNR-1363\"")
        );
        assert_eq!(
            find("deployment.unhcr_user").who,
            Confirmer::PrimeroAdministrators
        );
        assert_eq!(
            find("shipping_processes.transfer_status").who,
            Confirmer::Unhcr
        );
        // Already marked values are not marked twice.
        assert!(
            text.contains("intake_user = \"CHANGE-ME: progresv4_primero_intake\""),
            "{text}"
        );
        assert!(!text.contains("CHANGE-ME: CHANGE-ME"), "{text}");
        // Comments are kept.
        assert!(
            text.contains("# PING partner and interoperability ids"),
            "{text}"
        );
        // Every table is listed for review, with its declared partner side.
        assert_eq!(made.tables.len(), set.tables.len());
        let sex = made
            .tables
            .iter()
            .find(|t| t.file.ends_with("inbound-sex.toml"))
            .unwrap();
        assert_eq!(sex.partner_side, PartnerSide::Keys);
        assert_eq!(sex.entries, 4);
        assert!(made.sharing.is_some());
    }

    #[test]
    fn table_marks_are_listed_and_the_sharing_declaration_names_the_new_country() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("testland-dtp");
        let made = create(&shipped("ethiopia-gambella"), &to, "Testland - DTP").unwrap();
        let label = made
            .to_confirm
            .iter()
            .find(|c| c.key == "map.legal_support")
            .unwrap();
        assert!(label.file.ends_with("outbound-service-labels.toml"));
        assert_eq!(label.who, Confirmer::Both);
        let keys: Vec<&str> = made.to_confirm.iter().map(|c| c.key.as_str()).collect();
        for key in [
            "deployment.module_id",
            "deployment.intake_user",
            "deployment.unhcr_user",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        let sharing = std::fs::read_to_string(to.join(SHARING_FILE)).unwrap();
        assert!(sharing.contains("Testland - DTP"));
        assert!(!sharing.contains("Ethiopia - Gambella"));
    }

    #[test]
    fn an_existing_destination_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("taken");
        std::fs::create_dir(&to).unwrap();
        std::fs::write(to.join("notes.md"), "mine").unwrap();
        let e = create(&shipped("kenya-dadaab"), &to, "X").unwrap_err();
        assert!(matches!(e, NewCountryError::Exists(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(to.join("notes.md")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(&to).unwrap().count(), 1);
    }

    #[test]
    fn a_source_that_does_not_load_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("broken");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(
            from.join("inbound-sex.toml"),
            "description = \"x\"\n[map]\n",
        )
        .unwrap();
        let to = tmp.path().join("new");
        let e = create(&from, &to, "X").unwrap_err();
        assert!(matches!(e, NewCountryError::Source(_)), "{e}");
        assert!(!to.exists());
        assert!(matches!(
            create(&shipped("kenya-dadaab"), &to, "  ").unwrap_err(),
            NewCountryError::EmptyCountry
        ));
        assert!(!to.exists());
    }
}

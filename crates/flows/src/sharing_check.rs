//! The host's check of every body about to leave against the mapping
//! folder's `sharing.toml` (the data points each flow may send to each
//! destination). A body with a field not declared for (flow, destination)
//! is not sent: the record is refused as `undeclared-field`, naming the
//! flow, the job's name and version and the field paths (never a value). A
//! folder without `sharing.toml` shares nothing.
//!
//! One [`SharingCheck`] per run, from the run's job instance: the mapping
//! version that configured the job is the one whose declaration applies.
//! Each send site calls [`SharingCheck::check`] with the record it is about
//! to hand to the client (the client only wraps it in the partner's
//! envelope: `Destination::records` undoes that for an observer).

use std::sync::Arc;

use serde::Serialize;

use crate::report::{failed, RecordOutcome};
pub use bridge_mappings::sharing::Destination;
use bridge_mappings::{MappingSet, Sharing, SHARING_FILE};
use bridge_runtime::JobInstance;

/// Reason code of a record refused because its body holds a field the
/// declaration does not list.
pub const UNDECLARED_FIELD: &str = "undeclared-field";

/// What one run of one flow may send.
#[derive(Debug, Clone)]
pub struct SharingCheck {
    flow: &'static str,
    /// `name@version` of the job the run uses.
    job: String,
    /// Where the declaration is (or should be), for the reason.
    file: String,
    sharing: Option<Arc<Sharing>>,
}

impl SharingCheck {
    /// The check of a run of `flow` that maps with `instance` (its mapping
    /// set's declaration; an instance configured without a mapping set
    /// shares nothing).
    pub fn for_instance(flow: &'static str, instance: &JobInstance) -> Self {
        let info = &instance.job().info;
        Self::new(
            flow,
            format!("{}@{}", info.name, info.version),
            instance.mapping_set().map(Arc::as_ref),
        )
    }

    pub fn new(flow: &'static str, job: String, set: Option<&MappingSet>) -> Self {
        Self {
            flow,
            job,
            file: set.map_or_else(
                || format!("(no mapping folder)/{SHARING_FILE}"),
                |s| s.dir.join(SHARING_FILE).display().to_string(),
            ),
            sharing: set.and_then(|s| s.sharing.clone()),
        }
    }

    /// `Ok` when every field of `record` is declared for this flow and `to`;
    /// else the refused record's outcome (nothing may be sent).
    pub fn check<T: Serialize + ?Sized>(
        &self,
        to: Destination,
        record: &T,
    ) -> Result<(), RecordOutcome> {
        let value = serde_json::to_value(record)
            .map_err(|e| failed("internal", format!("body could not be checked: {e}")))?;
        let Some(sharing) = &self.sharing else {
            let reason = format!(
                "flow {} (job {}) may not send anything to {to}: {} is missing, so no data point is declared; nothing was sent",
                self.flow, self.job, self.file
            );
            tracing::warn!(
                flow = self.flow,
                destination = to.as_str(),
                "refused: no sharing declaration"
            );
            return Err(failed(UNDECLARED_FIELD, reason));
        };
        let undeclared = sharing.undeclared(self.flow, to, &value);
        if undeclared.is_empty() {
            return Ok(());
        }
        // Paths only: never a value.
        tracing::warn!(
            flow = self.flow,
            destination = to.as_str(),
            fields = %undeclared.join(","),
            "refused: undeclared field"
        );
        Err(failed(
            UNDECLARED_FIELD,
            format!(
                "flow {} (job {}) may not send {} to {to}: not declared in {}; nothing was sent",
                self.flow,
                self.job,
                undeclared
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.file
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set_with(sharing: Option<&str>) -> (tempfile::TempDir, MappingSet) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("deployment.toml"),
            "[deployment]\ncountry = \"T\"\ndesign = \"ping\"\n",
        )
        .unwrap();
        if let Some(text) = sharing {
            std::fs::write(dir.path().join(SHARING_FILE), text).unwrap();
        }
        let set = MappingSet::load_dir(dir.path()).unwrap();
        (dir, set)
    }

    const DECL: &str = r#"
[[share]]
flow = "ping-1.2"
to = "ping.transfer-status"
  [[share.field]]
  path = "ExternalId"
  source = "Primero case_id"
  category = "identification"
  why = "addresses the record"
  [[share.field]]
  path = "Fields[progres_primerotransferstatus]"
  source = "decision"
  category = "services"
  why = "the decision"
"#;

    #[test]
    fn a_declared_body_passes_and_an_undeclared_field_is_refused_by_path_only() {
        let (_dir, set) = set_with(Some(DECL));
        let check = SharingCheck::new("ping-1.2", "ping-1.2@0.1.0".into(), Some(&set));
        let ok = json!({"ExternalId": "CASE-1", "Fields": [{"Name": "progres_primerotransferstatus", "Value": "1"}]});
        assert!(check.check(Destination::PingTransferStatus, &ok).is_ok());
        let wider = json!({"ExternalId": "CASE-1", "Fields": [
            {"Name": "progres_primerotransferstatus", "Value": "1"},
            {"Name": "progres_pocfirstname", "Value": "Amina"}
        ]});
        let Err(RecordOutcome::Failed { code, reason }) =
            check.check(Destination::PingTransferStatus, &wider)
        else {
            panic!("an undeclared field was let through");
        };
        assert_eq!(code, UNDECLARED_FIELD);
        assert!(reason.contains("ping-1.2@0.1.0"), "{reason}");
        assert!(
            reason.contains("`Fields[progres_pocfirstname]`"),
            "{reason}"
        );
        assert!(reason.contains("sharing.toml"), "{reason}");
        assert!(!reason.contains("Amina"), "a value in the reason: {reason}");
        // Declared for another destination or flow: refused.
        assert!(check
            .check(Destination::PingReferralIngestion, &ok)
            .is_err());
        let other = SharingCheck::new("ping-2.1", "ping-2.1@0.1.0".into(), Some(&set));
        assert!(other.check(Destination::PingTransferStatus, &ok).is_err());
    }

    #[test]
    fn a_folder_without_a_declaration_shares_nothing() {
        let (_dir, set) = set_with(None);
        let check = SharingCheck::new("ping-1.2", "ping-1.2@0.1.0".into(), Some(&set));
        let Err(RecordOutcome::Failed { code, reason }) =
            check.check(Destination::PingTransferStatus, &json!({"ExternalId": "x"}))
        else {
            panic!("sent without a declaration");
        };
        assert_eq!(code, UNDECLARED_FIELD);
        assert!(reason.contains("missing"), "{reason}");
        let none = SharingCheck::new("ping-1.2", "j@1".into(), None);
        assert!(none
            .check(Destination::PingTransferStatus, &json!({}))
            .is_err());
    }

    #[test]
    fn the_declaration_knows_every_flow_of_the_registry_by_name_design_and_title() {
        for spec in crate::registry::all() {
            let known = bridge_mappings::sharing::flow_writes(spec.name)
                .unwrap_or_else(|| panic!("{} unknown to sharing.toml", spec.name));
            assert_eq!(known.design, spec.design.as_str(), "{}", spec.name);
            assert_eq!(known.title, spec.title, "{}", spec.name);
        }
        assert_eq!(
            bridge_mappings::sharing::FLOWS.len(),
            crate::registry::all().len()
        );
    }
}

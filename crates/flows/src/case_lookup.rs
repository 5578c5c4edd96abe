//! Find Primero cases by an id, and never trust the answer blindly.
//!
//! Primero v2.11+ drops a filter on a field the API user's role may not read
//! and answers with the whole scope (`Api::V2::Concerns::Record#index` keeps
//! only permitted filters); a malformed value makes its search fail, which it
//! answers as an empty 200, and the value is pasted into a jsonpath string.
//! So a lookup here refuses a malformed id before asking, and checks every
//! returned row against the value asked for: one row that does not match
//! means the role is misconfigured, and the record is held rather than
//! written to another child's case.

use super::report::RecordOutcome;
use bridge_partners::primero::{Case, CaseQuery, PrimeroClient};
use bridge_partners::ConnectorError;

/// The id a lookup searches by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKey<'a> {
    /// A proGres individual number (Primero `unhcr_individual_no`).
    IndividualNo(&'a str),
    /// A Primero `case_id` (a UUID).
    CaseId(&'a str),
}

impl<'a> CaseKey<'a> {
    /// The value asked for.
    fn raw(self) -> &'a str {
        match self {
            CaseKey::IndividualNo(v) | CaseKey::CaseId(v) => v,
        }
    }

    /// The Primero field filtered on.
    pub fn field(self) -> &'static str {
        match self {
            CaseKey::IndividualNo(_) => "unhcr_individual_no",
            CaseKey::CaseId(_) => "case_id",
        }
    }

    /// What a well-formed value looks like, for the refusal.
    fn expected(self) -> &'static str {
        match self {
            CaseKey::IndividualNo(_) => "a proGres individual number (e.g. 803-100000519)",
            CaseKey::CaseId(_) => "a UUID",
        }
    }

    /// Whether the value is well-formed; see [`is_individual_no`].
    pub fn is_well_formed(self) -> bool {
        match self {
            CaseKey::IndividualNo(v) => is_individual_no(v),
            CaseKey::CaseId(v) => uuid::Uuid::try_parse(v).is_ok(),
        }
    }

    fn query(self) -> CaseQuery {
        match self {
            CaseKey::IndividualNo(v) => CaseQuery::new().unhcr_individual_no(v),
            CaseKey::CaseId(v) => CaseQuery::new().case_id(v),
        }
    }

    /// Whether `case` carries exactly the value asked for.
    pub fn matches(self, case: &Case) -> bool {
        let have = match self {
            CaseKey::IndividualNo(_) => case.unhcr_individual_no.as_deref(),
            CaseKey::CaseId(_) => case.case_id.as_deref(),
        };
        have == Some(self.raw())
    }
}

/// A proGres individual number: three upper-case letters or digits (the
/// office, e.g. `803`, `DAD`), a hyphen and 8 or 9 digits, as in
/// `803-100000519` and `DAD-00008992`. Anything else is refused before it
/// reaches Primero's search.
pub fn is_individual_no(v: &str) -> bool {
    let Some((office, number)) = v.split_once('-') else {
        return false;
    };
    office.len() == 3
        && office
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && (8..=9).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Reason code: the id to look up is not well-formed.
pub const MALFORMED_ID: &str = "malformed-id";
/// Reason code: Primero answered rows that do not carry the id asked for.
pub const FILTER_NOT_APPLIED: &str = "filter-not-applied";

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Never shows the value: a malformed id may be any text.
    #[error("{MALFORMED_ID}: the {field} to look up is not {expected} ({len} characters); not searched for")]
    Malformed {
        field: &'static str,
        expected: &'static str,
        len: usize,
    },
    #[error(
        "{FILTER_NOT_APPLIED}: Primero answered {returned} case(s) for a {field} filter, {mismatched} of them with another {field}; \
         the API user's role cannot filter on {field} (Primero then answers its whole scope). Nothing was written. \
         Let the role read {field} (docs/operator/primero-role.md) and run `bridge doctor`"
    )]
    FilterNotApplied {
        field: &'static str,
        returned: usize,
        mismatched: usize,
    },
    #[error(transparent)]
    Partner(#[from] ConnectorError),
}

impl LookupError {
    /// The record's outcome: a malformed id fails (the source must correct
    /// it), an ignored filter holds the record for the operator, a partner
    /// error is a partner failure.
    pub fn outcome(&self) -> RecordOutcome {
        match self {
            LookupError::Malformed { .. } => super::report::failed(MALFORMED_ID, self.to_string()),
            LookupError::FilterNotApplied { .. } => RecordOutcome::Held {
                reason: self.to_string(),
                candidates: Vec::new(),
            },
            LookupError::Partner(e) => super::report::partner_failure(e),
        }
    }
}

/// The cases carrying `key`, each checked to carry it.
pub async fn find_cases(
    primero: &PrimeroClient,
    key: CaseKey<'_>,
) -> Result<Vec<Case>, LookupError> {
    refuse_malformed(key)?;
    let cases = primero.list_cases(&key.query()).await?;
    verify(key, cases)
}

/// Refuse a key that is not well-formed, without naming its value.
pub fn refuse_malformed(key: CaseKey<'_>) -> Result<(), LookupError> {
    if key.is_well_formed() {
        return Ok(());
    }
    Err(LookupError::Malformed {
        field: key.field(),
        expected: key.expected(),
        len: key.raw().chars().count(),
    })
}

/// Every row must carry the value asked for; otherwise the filter was not
/// applied and no row can be trusted.
fn verify(key: CaseKey<'_>, cases: Vec<Case>) -> Result<Vec<Case>, LookupError> {
    let mismatched = cases.iter().filter(|c| !key.matches(c)).count();
    if mismatched == 0 {
        return Ok(cases);
    }
    tracing::error!(
        field = key.field(),
        returned = cases.len(),
        mismatched,
        "Primero ignored a case filter: the API user's role cannot filter on this field; record held"
    );
    Err(LookupError::FilterNotApplied {
        field: key.field(),
        returned: cases.len(),
        mismatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(individual: Option<&str>, case_id: Option<&str>) -> Case {
        let mut c = Case {
            id: "rec-1".into(),
            ..Case::default()
        };
        c.unhcr_individual_no = individual.map(str::to_string);
        c.case_id = case_id.map(str::to_string);
        c
    }

    #[test]
    fn individual_numbers_of_the_progres_shapes_only() {
        for ok in ["803-100000519", "DAD-00008992", "803-10000051"] {
            assert!(is_individual_no(ok), "{ok}");
        }
        for bad in [
            "",
            "803100000519",
            "803-1000005190",
            "803-1000005",
            "dad-00008992",
            "803-10000051a",
            "803-100000519 ",
            "803-1000\"0519",
            "8033-00000519",
            "803-1000-0519",
            "Amina 2012-03-04",
        ] {
            assert!(!is_individual_no(bad), "{bad}");
        }
    }

    #[test]
    fn a_malformed_id_is_refused_without_echoing_it() {
        let e = refuse_malformed(CaseKey::IndividualNo("Amina Y. 2012-03-04")).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with(MALFORMED_ID), "{text}");
        assert!(!text.contains("Amina") && !text.contains("2012"), "{text}");
        assert!(refuse_malformed(CaseKey::CaseId("not-a-uuid")).is_err());
        assert!(refuse_malformed(CaseKey::CaseId("3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2")).is_ok());
        assert_eq!(e.outcome().reason_code(), Some(MALFORMED_ID));
    }

    #[test]
    fn rows_without_the_asked_value_mean_the_filter_was_dropped() {
        let key = CaseKey::IndividualNo("803-100000519");
        let good = case(Some("803-100000519"), None);
        assert_eq!(verify(key, vec![good.clone()]).unwrap().len(), 1);
        assert!(verify(key, vec![]).unwrap().is_empty());
        // Another child's case, or a row whose field the role cannot read.
        for other in [case(Some("803-100000520"), None), case(None, None)] {
            let e = verify(key, vec![good.clone(), other]).unwrap_err();
            assert!(
                matches!(
                    e,
                    LookupError::FilterNotApplied {
                        returned: 2,
                        mismatched: 1,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(matches!(e.outcome(), RecordOutcome::Held { .. }));
            assert_eq!(e.outcome().reason_code(), Some(FILTER_NOT_APPLIED));
        }
        let key = CaseKey::CaseId("3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2");
        assert!(verify(
            key,
            vec![case(None, Some("3e2d1c0b-bbbb-4ccc-9ddd-0000000000c3"))]
        )
        .is_err());
    }
}

//! The consent gate (issue 16): nothing leaves Primero for proGres unless
//! the case records consent, checked by the host where no job can bypass it.
//!
//! Which case fields express consent, whether a referral's
//! `consent_overridden` may stand in for them, and which flows the gate
//! covers are the country's: [`ConsentPolicy`], the `[consent]` of
//! `mappings/<country>/sharing.toml`.
//! Inbound, a consent indicator the proGres record carries is copied into
//! those Primero fields; without one the audit says consent was not
//! transmitted.

use bridge_mappings::ConsentPolicy;
use bridge_partners::primero::Case;
pub use bridge_store::ConsentBasis as Basis;
use serde_json::{Map, Value};

use crate::report::RecordOutcome;

/// Reason code of a record refused by the gate.
pub const NO_CONSENT: &str = "no-consent";

/// Strict: Primero's tick boxes are JSON booleans; anything else (a
/// missing field, `null`, `"true"`) is not consent.
fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

/// The gate's checks, on a country's [`ConsentPolicy`].
pub trait ConsentGate {
    fn covers(&self, flow: &str) -> bool;
    /// The consent fields `case` does not record as `true` (names only).
    fn missing<'a>(&'a self, case: &Case) -> Vec<&'a str>;
    /// Whether `case` records consent.
    fn recorded(&self, case: &Case) -> bool {
        self.missing(case).is_empty()
    }
    /// May a record of `case` leave Primero by `flow`? `overridden`: the
    /// referral's `consent_overridden` (decisions have none). The refusal
    /// is a [`RecordOutcome::NoConsent`] naming fields, never values. A
    /// flow the country left out of the gate goes on whatever the case
    /// records (`Absent` when nothing: the audit shows it).
    fn outbound(&self, flow: &str, case: &Case, overridden: bool) -> Result<Basis, RecordOutcome>;
    /// Inbound: the consent indicator of the proGres `source` record, when
    /// the country names one and the record carries it as a boolean (or
    /// `"true"`/`"false"`, `1`/`0`).
    fn inbound(&self, source: &Value) -> (Basis, Option<bool>);
    /// Write a transmitted indicator into the Primero case body.
    fn apply_inbound(&self, case: &mut Map<String, Value>, consent: Option<bool>);
}

impl ConsentGate for ConsentPolicy {
    fn covers(&self, flow: &str) -> bool {
        self.flows.iter().any(|f| f == flow)
    }

    fn missing<'a>(&'a self, case: &Case) -> Vec<&'a str> {
        self.fields
            .iter()
            .filter(|f| !is_true(case.extra.get(f.as_str())))
            .map(String::as_str)
            .collect()
    }

    fn outbound(&self, flow: &str, case: &Case, overridden: bool) -> Result<Basis, RecordOutcome> {
        let missing = self.missing(case);
        if missing.is_empty() {
            return Ok(Basis::Recorded);
        }
        if !self.covers(flow) {
            return Ok(Basis::Absent);
        }
        if overridden && self.allow_override {
            return Ok(Basis::Overridden);
        }
        let mut reason = format!(
            "{NO_CONSENT}: case {} does not record {} as true",
            case.id,
            missing.join(" and ")
        );
        if overridden {
            reason.push_str("; the referral overrides consent, which this country's policy does not allow (sharing.toml [consent] allow_override)");
        }
        Err(RecordOutcome::NoConsent { reason })
    }

    fn inbound(&self, source: &Value) -> (Basis, Option<bool>) {
        let Some(path) = &self.inbound_indicator else {
            return (Basis::NotTransmitted, None);
        };
        let found = path.split('.').try_fold(source, |v, key| v.get(key));
        let value = match found {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "1" => Some(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s == "0" => Some(false),
            Some(Value::Number(n)) => n.as_i64().map(|n| n != 0),
            _ => None,
        };
        match value {
            Some(true) => (Basis::Recorded, Some(true)),
            Some(false) => (Basis::Absent, Some(false)),
            None => (Basis::NotTransmitted, None),
        }
    }

    fn apply_inbound(&self, case: &mut Map<String, Value>, consent: Option<bool>) {
        if let Some(given) = consent {
            for f in &self.fields {
                case.insert(f.clone(), Value::Bool(given));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(fields: Value) -> Case {
        let mut v = fields;
        v["id"] = json!("case-1");
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn both_fields_must_be_true_booleans() {
        let rules = ConsentPolicy::default();
        let ok = case(json!({"consent_for_services": true, "disclosure_other_orgs": true}));
        assert_eq!(rules.outbound("ping-2.1", &ok, false), Ok(Basis::Recorded));
        for partial in [
            json!({"consent_for_services": true}),
            json!({"consent_for_services": true, "disclosure_other_orgs": false}),
            json!({"consent_for_services": "true", "disclosure_other_orgs": true}),
            json!({"consent_for_services": null, "disclosure_other_orgs": true}),
        ] {
            let refused = rules.outbound("ping-2.1", &case(partial.clone()), false);
            let Err(RecordOutcome::NoConsent { reason }) = refused else {
                panic!("{partial} passed the gate");
            };
            assert!(reason.starts_with("no-consent: case case-1"), "{reason}");
        }
    }

    #[test]
    fn an_override_counts_only_where_the_country_allows_it() {
        let none = case(json!({}));
        let mut rules = ConsentPolicy::default();
        let refused = rules.outbound("dtp-2.1", &none, true).unwrap_err();
        assert!(
            matches!(&refused, RecordOutcome::NoConsent { reason } if reason.contains("allow_override"))
        );
        rules.allow_override = true;
        assert_eq!(
            rules.outbound("dtp-2.1", &none, true),
            Ok(Basis::Overridden)
        );
        assert!(rules.outbound("dtp-2.1", &none, false).is_err());
    }

    #[test]
    fn flows_outside_the_gate_pass_and_say_on_what() {
        let rules = ConsentPolicy::default();
        assert_eq!(
            rules.outbound("ping-1.1", &case(json!({})), false),
            Ok(Basis::Absent)
        );
        let ok = case(json!({"consent_for_services": true, "disclosure_other_orgs": true}));
        assert_eq!(rules.outbound("ping-1.1", &ok, false), Ok(Basis::Recorded));
    }

    #[test]
    fn refusals_name_fields_never_values() {
        let rules = ConsentPolicy::default();
        let c = case(json!({"consent_for_services": "Amina said no"}));
        let Err(RecordOutcome::NoConsent { reason }) = rules.outbound("ping-1.2", &c, false) else {
            panic!()
        };
        assert!(!reason.contains("Amina"));
        assert!(reason.contains("consent_for_services and disclosure_other_orgs"));
    }

    #[test]
    fn inbound_indicator_is_copied_or_reported_not_transmitted() {
        let mut rules = ConsentPolicy::default();
        let source = json!({"referral": {"consent": "true"}});
        assert_eq!(rules.inbound(&source), (Basis::NotTransmitted, None));
        rules.inbound_indicator = Some("referral.consent".into());
        assert_eq!(rules.inbound(&source), (Basis::Recorded, Some(true)));
        assert_eq!(
            rules.inbound(&json!({"referral": {"consent": false}})),
            (Basis::Absent, Some(false))
        );
        assert_eq!(rules.inbound(&json!({})), (Basis::NotTransmitted, None));
        let mut body = Map::new();
        rules.apply_inbound(&mut body, Some(true));
        assert_eq!(body["consent_for_services"], json!(true));
        assert_eq!(body["disclosure_other_orgs"], json!(true));
    }
}

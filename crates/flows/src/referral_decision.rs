//! Write one proGres decision onto the Primero referral it answers: find the
//! case by `case_id`, pick the referral of the service, PATCH its status.
//! Shared by PING workflow 2.2 and DTP flow 2-3 (spec §1.A "Flow 2-3" steps
//! 3–5, §1.B "Workflow 2.2" step 4, §2.4).
//!
//! Better than the original:
//! - Several cases with the `case_id` hold the record (`ambiguous-match`);
//!   the original (2.2) silently took the first.
//! - The referral state machine is respected and checked: Primero answers
//!   200 and changes nothing for a transition it does not allow (e.g.
//!   rejecting an accepted referral). A referral already carrying the decision
//!   counts as applied (a re-run after a lost acknowledgement); one decided
//!   otherwise is held (`decision-conflict`) instead of being reported as
//!   synced; after the PATCH the status Primero returns is compared.
//! - When a service was referred again after an earlier answer, the open
//!   (`in_progress`) referral is the one decided.

use serde::Deserialize;

use super::case_lookup::{find_cases, CaseKey};
pub use super::report::partner_failure;
use super::report::{failed, RecordOutcome};
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::primero::{PrimeroClient, Referral, ReferralStatus, ReferralUpdate};

/// Reason code of a record held because several cases or referrals match.
pub const AMBIGUOUS_MATCH: &str = "ambiguous-match";
/// Reason code of a decision Primero's referral state machine will not take.
pub const DECISION_CONFLICT: &str = "decision-conflict";

/// A decision as the inbound decision jobs emit it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InboundDecision {
    /// Primero `case_id` (not the record id).
    pub case_id: String,
    pub status: ReferralStatus,
    #[serde(default)]
    pub rejected_reason: Option<String>,
}

/// How the referral is recognised among the case's referrals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMatch<'a> {
    /// `service_record_id` equals the full service `unique_id` (PING 2.2).
    Exact(&'a str),
    /// `service_record_id` ends with these characters (DTP 2-3: the last 12
    /// characters of the service `unique_id` travel in the correlation id).
    Suffix(&'a str),
}

impl ServiceMatch<'_> {
    pub fn matches(&self, service_record_id: &str) -> bool {
        match self {
            ServiceMatch::Exact(id) => service_record_id == *id,
            ServiceMatch::Suffix(s) => {
                !s.is_empty() && service_record_id.len() > s.len() && service_record_id.ends_with(s)
            }
        }
    }
}

/// Whether an outcome is worth another attempt later.
pub fn is_transient(outcome: &RecordOutcome) -> bool {
    matches!(outcome, RecordOutcome::Failed { code, .. } if code == "partner-unavailable")
}

/// What to do with the referrals of the service.
#[derive(Debug, PartialEq)]
pub enum Pick<'a> {
    /// PATCH this open referral.
    Decide(&'a Referral),
    /// A referral already carries this decision.
    AlreadyDecided(&'a Referral),
    NotFound,
    /// Several open referrals of the service.
    Ambiguous(Vec<String>),
    /// Every referral of the service is decided otherwise (or closed).
    Conflict(Vec<String>),
}

/// Choose the referral a decision applies to.
pub fn pick<'a>(
    referrals: &'a [Referral],
    service: ServiceMatch<'_>,
    status: ReferralStatus,
) -> Pick<'a> {
    let matching: Vec<&Referral> = referrals
        .iter()
        .filter(|r| {
            r.service_record_id
                .as_deref()
                .is_some_and(|s| service.matches(s))
        })
        .collect();
    if matching.is_empty() {
        return Pick::NotFound;
    }
    let open: Vec<&Referral> = matching
        .iter()
        .copied()
        .filter(|r| r.status == ReferralStatus::InProgress)
        .collect();
    match open.as_slice() {
        [one] => Pick::Decide(one),
        [] => match matching.iter().find(|r| r.status == status) {
            Some(done) => Pick::AlreadyDecided(done),
            None => Pick::Conflict(matching.iter().map(|r| r.id.clone()).collect()),
        },
        several => Pick::Ambiguous(several.iter().map(|r| r.id.clone()).collect()),
    }
}

/// How [`apply_decision`] ends: by writing, or (a dry run) by reporting
/// the write it would make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Write,
    DryRun,
}

/// Apply `decision` to the referral of `service`. `Updated` / `AlreadyPresent`
/// (with the case record id) mean Primero now holds the decision; a dry run
/// ends before the PATCH with `WouldWrite` (`decide-referral`, the case id).
pub async fn apply_decision(
    primero: &PrimeroClient,
    decision: &InboundDecision,
    service: ServiceMatch<'_>,
    apply: Apply,
    sharing: &SharingCheck,
) -> RecordOutcome {
    if !matches!(
        decision.status,
        ReferralStatus::Accepted | ReferralStatus::Rejected
    ) {
        return failed(
            "job-invalid-output",
            "a proGres decision must be accepted or rejected",
        );
    }
    let cases = match find_cases(primero, CaseKey::CaseId(&decision.case_id)).await {
        Ok(c) => c,
        Err(e) => return e.outcome(),
    };
    let case = match cases.as_slice() {
        [] => return failed("not-found", "no Primero case has this case_id"),
        [case] => case,
        several => {
            return RecordOutcome::Held {
                reason: AMBIGUOUS_MATCH.into(),
                candidates: several.iter().map(|c| c.id.clone()).collect(),
            }
        }
    };
    let referrals = match primero.list_referrals(&case.id).await {
        Ok(r) => r,
        Err(e) => return partner_failure(&e),
    };
    let referral = match pick(&referrals, service, decision.status) {
        Pick::Decide(r) => r,
        Pick::AlreadyDecided(r) => {
            tracing::info!(referral = %r.id, "referral already carries the decision");
            return RecordOutcome::AlreadyPresent {
                case_id: case.id.clone(),
            };
        }
        Pick::NotFound => {
            return failed(
                "not-found",
                format!("case {} has no referral for the service", case.id),
            )
        }
        Pick::Ambiguous(candidates) => {
            return RecordOutcome::Held {
                reason: AMBIGUOUS_MATCH.into(),
                candidates,
            }
        }
        Pick::Conflict(candidates) => {
            return RecordOutcome::Held {
                reason: DECISION_CONFLICT.into(),
                candidates,
            }
        }
    };
    let update = ReferralUpdate {
        status: decision.status,
        rejected_reason: decision.rejected_reason.clone(),
        rejection_note: None,
    };
    if let Err(refused) = sharing.check(Destination::PrimeroUpdateReferral, &update) {
        return refused;
    }
    if apply == Apply::DryRun {
        tracing::info!(referral = %referral.id, "dry run: the referral would be decided");
        return super::report::would_write("decide-referral", Some(case.id.clone()));
    }
    match primero
        .patch_referral(&case.id, &referral.id, &update)
        .await
    {
        Ok(after) if after.status == decision.status => {
            tracing::info!(referral = %referral.id, "referral decided");
            RecordOutcome::Updated {
                case_id: case.id.clone(),
            }
        }
        // Primero's silent no-op: the transition was not allowed.
        Ok(_) => RecordOutcome::Held {
            reason: DECISION_CONFLICT.into(),
            candidates: vec![referral.id.clone()],
        },
        Err(e) => partner_failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral(id: &str, service: &str, status: ReferralStatus) -> Referral {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "status": status,
            "service_record_id": service,
        }))
        .unwrap()
    }

    const SVC: &str = "5f4e3d2c-ffff-4aaa-8bbb-abcdef123456";

    #[test]
    fn exact_match_is_neither_prefix_nor_suffix() {
        let m = ServiceMatch::Exact(SVC);
        assert!(m.matches(SVC));
        assert!(!m.matches(&format!("{SVC}0")));
        assert!(!m.matches(&SVC[1..]));
        assert!(!m.matches(&SVC[..SVC.len() - 1]));
        let s = ServiceMatch::Suffix("abcdef123456");
        assert!(s.matches(SVC));
        assert!(!s.matches("abcdef123456"));
        assert!(!s.matches("5f4e3d2c-ffff-4aaa-8bbb-abcdef123457"));
        assert!(!ServiceMatch::Suffix("").matches(SVC));
    }

    #[test]
    fn picks_the_open_referral_and_recognises_done_or_conflicting_ones() {
        use ReferralStatus::*;
        let other = "5f4e3d2c-ffff-4aaa-8bbb-abcdef1234567";
        let rs = vec![
            referral("old", SVC, Rejected),
            referral("open", SVC, InProgress),
            referral("x", other, InProgress),
        ];
        assert_eq!(
            pick(&rs, ServiceMatch::Exact(SVC), Accepted),
            Pick::Decide(&rs[1])
        );
        let decided = vec![referral("a", SVC, Accepted)];
        assert_eq!(
            pick(&decided, ServiceMatch::Exact(SVC), Accepted),
            Pick::AlreadyDecided(&decided[0])
        );
        assert_eq!(
            pick(&decided, ServiceMatch::Exact(SVC), Rejected),
            Pick::Conflict(vec!["a".into()])
        );
        let two = vec![
            referral("a", SVC, InProgress),
            referral("b", SVC, InProgress),
        ];
        assert_eq!(
            pick(&two, ServiceMatch::Exact(SVC), Accepted),
            Pick::Ambiguous(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            pick(&rs, ServiceMatch::Exact("nope"), Accepted),
            Pick::NotFound
        );
    }
}

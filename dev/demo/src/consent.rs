//! The consent safeguards in the round trips (issue 16), each checked by
//! its run report and the state store:
//! - a referral whose case no longer records consent is not sent (`no-consent`);
//! - a case shared earlier that loses consent raises an alert (`consent-revoked`);
//! - once the caseworker records consent, the refused referral goes, although
//!   its referral is older than the flow's cursor.

use serde_json::json;

use crate::round_trip::{obj, refer_to_unhcr, RoundTrips};
use crate::scenario::Simulators;
use bridge_flows::app::{new_run_id, App};
use bridge_flows::RunReport;
use bridge_sim::people::PeopleGenerator;

/// The caseworker records (or withdraws) the child's consent on a case.
pub fn set_consent(sims: &Simulators, case_id: &str, given: bool) -> anyhow::Result<()> {
    sims.primero_sim().update_case(
        case_id,
        obj(json!({"consent_for_services": given, "disclosure_other_orgs": given})),
    )?;
    Ok(())
}

/// The outcome label of `source_id` in a run report.
fn outcome_of(report: &RunReport, source_id: &str) -> String {
    report
        .records
        .iter()
        .find(|r| r.source_id == source_id)
        .map(|r| r.outcome.label().to_string())
        .unwrap_or_else(|| "(not in the report)".into())
}

/// Run the safeguards on `flow` (an outbound referral flow); `shared_case`
/// is a case the flow shared before. Returns the refused service's id.
pub async fn safeguards(
    app: &App,
    sims: &Simulators,
    (rt, flow, today): (&mut RoundTrips, &str, &str),
    (people, unhcr_user): (&mut PeopleGenerator, &str),
    shared_case: &str,
) -> anyhow::Result<String> {
    // A referral made with consent, withdrawn before the bridge ran; and
    // the case shared earlier loses its consent too.
    let (case_id, service_uid, _) = refer_to_unhcr(sims, &people.person(), unhcr_user)?;
    set_consent(sims, &case_id, false)?;
    set_consent(sims, shared_case, false)?;
    let alerts_before = app.store.alerts(false).await?.len();
    let report = app.run_flow(flow, &new_run_id(), today).await?;
    rt.check(
        "consent  referral without consent → not sent",
        "no-consent",
        outcome_of(&report, &service_uid),
    );
    rt.check(
        "consent  shared case loses consent → alert",
        "consent-revoked",
        outcome_of(&report, shared_case),
    );
    rt.check(
        "consent  alerts raised for the manual procedure",
        "1",
        (app.store.alerts(false).await?.len() - alerts_before).to_string(),
    );
    // Edited again, still without consent: no second alert.
    set_consent(sims, shared_case, false)?;
    let again = app.run_flow(flow, &new_run_id(), today).await?;
    rt.check(
        "consent  next run: no second alert",
        "(not in the report)",
        outcome_of(&again, shared_case),
    );
    // The caseworker records consent: the refused referral goes now.
    set_consent(sims, &case_id, true)?;
    let report = app.run_flow(flow, &new_run_id(), today).await?;
    rt.check(
        "consent  consent recorded → the referral goes",
        "sent",
        outcome_of(&report, &service_uid),
    );
    audit_checks(app, rt, flow, &service_uid).await?;
    Ok(service_uid)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The audit trail holds each share, refusal and revocation of the round
/// trips, with who permitted it and on what consent, and its chain verifies.
async fn audit_checks(
    app: &App,
    rt: &mut RoundTrips,
    flow: &str,
    service_uid: &str,
) -> anyhow::Result<()> {
    let entries = app
        .store
        .audit_list(&bridge_store::AuditFilter::default())
        .await?;
    let has = |flow: &str, event: &str, consent: &str| {
        entries
            .iter()
            .any(|r| r.entry.flow == flow && r.entry.event == event && r.entry.consent == consent)
    };
    let shared = entries.iter().find(|r| {
        r.entry.flow == flow && r.entry.event == "delivered" && r.entry.source_id == service_uid
    });
    rt.check(
        "audit  referral shared on recorded consent, by its referrer",
        "recorded, permitted",
        shared.map_or("(no entry)".to_string(), |r| {
            format!(
                "{}, {}",
                r.entry.consent,
                if r.entry.permitted_by.is_some() {
                    "permitted"
                } else {
                    "no one"
                }
            )
        }),
    );
    rt.check(
        "audit  refusal and revocation recorded",
        "yes",
        yes(has(flow, "refused-no-consent", "absent") && has(flow, "consent-revoked", "absent")),
    );
    let inbound = if flow.starts_with("ping") {
        "ping-1.1"
    } else {
        "dtp-1.1"
    };
    rt.check(
        "audit  proGres referral: consent not transmitted",
        "yes",
        yes(has(inbound, "delivered", "not-transmitted")),
    );
    let verified = app.store.audit_verify().await?;
    rt.check(
        "audit  the chain verifies",
        "ok",
        if verified.ok() { "ok" } else { "broken" },
    );
    Ok(())
}

//! `/consent`: alerts raised when a case shared earlier lost its consent;
//! `/audit`: the audit trail of what left each agency, with its chain check.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::html;

use super::{known_flow, store_failed, PageResult};
use crate::auth::Caller;
use crate::{view, Console};
use bridge_store::AuditFilter;

pub async fn consent(State(console): State<Arc<Console>>, caller: Caller) -> PageResult {
    let alerts = console
        .service
        .app
        .store
        .alerts(false)
        .await
        .map_err(|e| store_failed(&caller, e))?;
    let body = html! {
        p.lead { "A case shared with the partner that no longer records consent raises an alert: the manual procedure of the Information Sharing Protocol applies (the bridge sends nothing). Alerts go to the operator's webhook when one is configured." }
        @if alerts.is_empty() {
            p.banner { "No consent alert was raised." }
        } @else {
            table {
                thead { tr { th.num { "Alert" } th { "Kind" } th { "Flow" } th { "Case id" } th { "Raised" } th { "Webhook" } } }
                tbody {
                    @for a in &alerts {
                        tr {
                            td.num { (a.id) }
                            td { (view::badge(&a.kind)) }
                            td { (a.flow) }
                            td { code { (a.case_id) } }
                            td { (view::time(Some(&a.raised_at))) }
                            td {
                                @match &a.delivered_at {
                                    Some(t) => { "delivered " (view::time(Some(t))) }
                                    None => {
                                        "pending, " (a.attempts) " attempt(s)"
                                        @if let Some(e) = &a.last_error { " · last error " code { (e) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/consent", "Consent alerts", body),
    ))
}

#[derive(serde::Deserialize)]
pub struct AuditQuery {
    flow: Option<String>,
}

/// Entries shown, newest first (`bridge audit export` gives them all).
const AUDIT_PAGE: i64 = 200;

pub async fn audit(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let store = console.service.app.store.as_ref();
    let fail = |e| store_failed(&caller, e);
    let flow = q.flow.as_deref().and_then(known_flow);
    let verification = store.audit_verify().await.map_err(fail)?;
    let entries = store
        .audit_list(&AuditFilter {
            flow: flow.map(str::to_string),
            limit: Some(AUDIT_PAGE),
            newest_first: true,
            ..AuditFilter::default()
        })
        .await
        .map_err(fail)?;
    let body = html! {
        p.lead { "Every record that left an agency, or was refused for lack of consent, in a hash chain: a changed, removed or reordered entry breaks it." }
        @match &verification.problem {
            None => (view::banner("done", &format!(
                "The chain verifies: {} entries checked; head entry {} with hash {}.",
                verification.checked, verification.head_seq, verification.head_hash))),
            Some(problem) => (view::banner("error", &format!("The chain does not verify: {problem}"))),
        }
        (view::flow_filter(&console, "/audit", flow))
        @if entries.is_empty() {
            p.banner { "No audit entry yet." }
        } @else {
            table {
                thead { tr {
                    th.num { "Seq" } th { "At" } th { "Flow" } th { "Event" } th { "Source id" } th { "Target id" }
                    th { "Case id" } th { "Consent" } th { "Job" }
                } }
                tbody {
                    @for r in &entries {
                        tr {
                            td.num { (r.seq) }
                            td { (view::time(Some(&r.entry.at))) }
                            td { (r.entry.flow) }
                            td { (view::badge(&r.entry.event)) }
                            td { code { (r.entry.source_id) } }
                            td { @match &r.entry.target_id { Some(t) => code { (t) }, None => span.none { "–" } } }
                            td { @match &r.entry.case_id { Some(t) => code { (t) }, None => span.none { "–" } } }
                            td { (view::badge(&r.entry.consent)) }
                            td { (r.entry.job) " " (r.entry.job_version) " " (view::hash(Some(&r.entry.job_hash))) }
                        }
                    }
                }
            }
            @if entries.len() as i64 == AUDIT_PAGE {
                p { "The newest " (AUDIT_PAGE) " entries; `bridge audit export` gives them all." }
            }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/audit", "Audit trail", body),
    ))
}

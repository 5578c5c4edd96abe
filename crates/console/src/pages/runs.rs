//! `/runs`: run history; `/runs/{id}`: one run, each record's outcome and
//! the full reason of each one not delivered.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::DateTime;
use maud::html;

use super::{known_flow, store_failed, PageResult};
use crate::auth::Caller;
use crate::{view, Console};
use bridge_flows::ledger::resolution;
use bridge_store::RunRow;

#[derive(serde::Deserialize)]
pub struct ListQuery {
    flow: Option<String>,
    limit: Option<i64>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;

fn duration(r: &RunRow) -> String {
    let (Some(start), Some(end)) = (
        DateTime::parse_from_rfc3339(&r.started_at).ok(),
        r.ended_at
            .as_deref()
            .and_then(|e| DateTime::parse_from_rfc3339(e).ok()),
    ) else {
        return "–".into();
    };
    let ms = (end - start).num_milliseconds().max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} s", ms / 1000)
    }
}

pub async fn list(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let flow = match q.flow.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => Some(known_flow(f).ok_or_else(|| {
            view::problem(
                StatusCode::BAD_REQUEST,
                Some(&caller),
                "Unknown flow",
                "There is no flow of that name.",
            )
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let runs = console
        .service
        .app
        .store
        .runs(flow, limit)
        .await
        .map_err(|e| store_failed(&caller, e))?;
    let body = html! {
        (view::flow_filter(&console, "/runs", flow))
        @if runs.is_empty() {
            p.banner { "No runs recorded yet." }
        } @else {
            table {
                thead { tr {
                    th { "Started" } th { "Flow" } th { "Trigger" } th { "Outcome" } th.num { "Took" }
                    th.num { "Fetched" } th.num { "Delivered" } th.num { "Held" } th.num { "Skipped" }
                    th.num { "Failed" } th.num { "Dead-lettered" }
                } }
                tbody {
                    @for r in &runs {
                        tr {
                            td { a href={"/runs/" (r.id)} { (view::time(Some(&r.started_at))) } }
                            td { (r.flow) } td { (r.trigger) } td { (view::badge(&r.outcome)) }
                            td.num { (duration(r)) }
                            td.num { (r.fetched) } td.num { (r.delivered) } td.num { (r.held) }
                            td.num { (r.skipped) } td.num { (r.failed) } td.num { (r.dead_lettered) }
                        }
                    }
                }
            }
            @if runs.len() as i64 == limit {
                p { a href={"/runs?limit=" (limit * 4) (flow.map(|f| format!("&flow={f}")).unwrap_or_default())} { "Older runs" } }
            }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/runs", "Runs", body),
    ))
}

#[derive(serde::Deserialize)]
pub struct ShowQuery {
    /// Set by a replay: the dead-letter entry this run replayed.
    replayed: Option<i64>,
}

/// What a person does about a record left with this status and code.
fn what_to_do(status: &str, code: Option<&str>, max_attempts: u32) -> Option<String> {
    match status {
        "failed" => Some(format!(
            "Retried by the next runs; after {max_attempts} failed attempts it moves to the dead letter."
        )),
        "held" | "dead-lettered" => Some(resolution(code.unwrap_or_default()).to_string()),
        "in-dead-letter" => Some("Waits in the dead letter: replay it from Needs attention.".into()),
        "no-consent" => Some(
            "Not shared: the case does not record consent. It is looked at again when the case changes."
                .into(),
        ),
        _ => None,
    }
}

pub async fn show(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    let store = console.service.app.store.as_ref();
    let fail = |e| store_failed(&caller, e);
    let Some(run) = store.run(&id).await.map_err(fail)? else {
        return Err(view::problem(
            StatusCode::NOT_FOUND,
            Some(&caller),
            "No such run",
            "No run with this id is recorded (runs older than the retention are removed).",
        ));
    };
    let records = store.run_records(&id).await.map_err(fail)?;
    let max_attempts = console.service.app.delivery.max_attempts;
    let body = html! {
        @if let Some(entry) = q.replayed {
            (view::banner("done", &format!("Dead-letter entry {entry} was replayed: this is the run that replayed it.")))
        }
        dl.facts {
            dt { "Run" } dd { code { (run.id) } }
            dt { "Flow" } dd { a href={"/runs?flow=" (run.flow)} { (run.flow) } }
            dt { "Trigger" } dd { (run.trigger) }
            dt { "Started" } dd { (view::time(Some(&run.started_at))) }
            dt { "Ended" } dd { (view::time(run.ended_at.as_deref())) " (" (duration(&run)) ")" }
            dt { "Outcome" } dd { (view::badge(&run.outcome)) }
            @if let Some(why) = &run.aborted_reason { dt { "Stopped because" } dd.reason { (why) } }
            dt { "Counts" }
            dd {
                "fetched " (run.fetched) " · delivered " (run.delivered) " · held " (run.held)
                " · skipped " (run.skipped) " · failed " (run.failed) " · dead-lettered " (run.dead_lettered)
            }
            dt { "Job" } dd { (view::hash(run.job_hash.as_deref())) }
            dt { "Mappings" } dd { (view::hash(run.mappings_hash.as_deref())) }
        }
        h2 { "Records" }
        @if records.is_empty() {
            p.banner { "This run recorded no record outcomes." }
        } @else {
            table {
                thead { tr {
                    th { "Source id" } th { "Outcome" } th { "Target id" } th.num { "Attempt" } th { "Reason, and what to do" }
                } }
                tbody {
                    @for r in &records {
                        tr {
                            td { code { (r.source_id) } }
                            td { (view::badge(&r.status)) }
                            td { @match &r.target_id { Some(t) => code { (t) }, None => span.none { "–" } } }
                            td.num { (r.attempt) }
                            td.reason {
                                @if let Some(why) = r.why() { div { (why) } }
                                @if let Some(todo) = what_to_do(&r.status, r.reason_code.as_deref(), max_attempts) {
                                    div.todo { (todo) }
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
        view::page(
            &console,
            &caller,
            "/runs",
            &format!("Run of {}", run.flow),
            body,
        ),
    ))
}

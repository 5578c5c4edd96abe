//! `/attention`: what waits for a person. The dead letter (with what
//! resolves each entry and a replay button for operators), and the records
//! the last run of each flow held or failed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use super::{store_failed, PageResult};
use crate::auth::Caller;
use crate::{view, Console};
use bridge_flows::ledger::resolution;

pub async fn page(State(console): State<Arc<Console>>, caller: Caller) -> PageResult {
    let app = &console.service.app;
    let store = app.store.as_ref();
    let fail = |e| store_failed(&caller, e);
    let dead = store.dead_letters(None).await.map_err(fail)?;
    // The records of each flow's newest finished run that are not through.
    let mut waiting = Vec::new();
    for entry in &console.service.schedule {
        let runs = store.runs(Some(&entry.flow), 20).await.map_err(fail)?;
        if let Some(last) = runs.iter().find(|r| r.ended_at.is_some()) {
            let records = store.run_records(&last.id).await.map_err(fail)?;
            waiting.extend(
                records
                    .into_iter()
                    .filter(|r| matches!(r.status.as_str(), "held" | "failed"))
                    .map(|r| (last.id.clone(), r)),
            );
        }
    }
    let policy = app.delivery;
    let body = html! {
        p.lead { "Records that did not go through, with why and what resolves them. Only system ids are shown: look the record up in the partner system by its id." }
        h2 id="dead-letter" { "Dead letter (" (dead.len()) ")" }
        @if dead.is_empty() {
            p.banner { "The dead letter is empty." }
        } @else {
            p { "A record moves here after " (policy.max_attempts) " failed attempts, after " (policy.max_held_runs)
                " runs held, or at once when a write may or may not have happened. Later runs leave it alone until it is replayed." }
            table {
                thead { tr {
                    th.num { "Entry" } th { "Flow" } th { "Source id" } th { "Reason, and what to do" }
                    th.num { "Attempts" } th { "Since" } th { "" }
                } }
                tbody {
                    @for e in &dead {
                        tr id={"dead-letter-" (e.id)} {
                            td.num { (e.id) }
                            td { (e.flow) }
                            td { code { (e.source_id) } }
                            td.reason {
                                div { (view::badge(&e.reason_code)) " " (e.reason) }
                                div.todo { (resolution(&e.reason_code)) }
                            }
                            td.num { (e.attempts) }
                            td { (view::time(Some(&e.created_at))) }
                            td {
                                @if caller.is_operator() {
                                    form.inline method="post" action={"/dead-letter/" (e.id) "/replay"} {
                                        (view::csrf_field(&caller))
                                        button type="submit" name="replay" value=(e.id) { "Replay" }
                                    }
                                } @else {
                                    span.none { "an operator replays it" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 id="held" { "Held or failing in the last run (" (waiting.len()) ")" }
        @if waiting.is_empty() {
            p.banner { "The last run of every flow held nothing and failed nothing." }
        } @else {
            p { "A failed record is retried by the next runs; a held one waits for something to be fixed in a partner system and is tried again each run, up to "
                (policy.max_held_runs) " runs." }
            table {
                thead { tr {
                    th { "Flow" } th { "Source id" } th { "Outcome" } th.num { "Attempt" } th { "Reason, and what to do" } th { "Run" }
                } }
                tbody {
                    @for (run_id, r) in &waiting {
                        tr {
                            td { (r.flow) }
                            td { code { (r.source_id) } }
                            td { (view::badge(&r.status)) }
                            td.num { (r.attempt) }
                            td.reason {
                                @if let Some(why) = r.why() { div { (why) } }
                                div.todo {
                                    @if r.status == "held" { (resolution(r.reason_code.as_deref().unwrap_or_default())) }
                                    @else { "Retried by the next run; fix the cause named above if it is not a passing outage." }
                                }
                            }
                            td { a href={"/runs/" (run_id)} { "run" } }
                        }
                    }
                }
            }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/attention", "Needs attention", body),
    ))
}

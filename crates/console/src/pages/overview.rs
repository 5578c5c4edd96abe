//! `/`: every flow of the deployment, when it runs, when it last ran,
//! succeeded and delivered, and what waits on it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use maud::html;

use super::{store_failed, PageResult};
use crate::auth::Caller;
use crate::{view, Console};
use bridge_flows::registry;

/// Runs looked at per flow for "last success" and "last delivered".
const LOOKBACK: i64 = 500;

pub async fn page(State(console): State<Arc<Console>>, caller: Caller) -> PageResult {
    let app = &console.service.app;
    let store = app.store.as_ref();
    let now = Utc::now();
    let fail = |e| store_failed(&caller, e);

    // One read of the dead letter, counted per flow below.
    let dead_letter = store.dead_letters(None).await.map_err(fail)?;
    let mut rows = Vec::new();
    let mut total_held = 0;
    for entry in &console.service.schedule {
        let runs = store
            .runs(Some(&entry.flow), LOOKBACK)
            .await
            .map_err(fail)?;
        let dead = dead_letter.iter().filter(|e| e.flow == entry.flow).count();
        let spec = registry::get(&entry.flow);
        let cursor = match spec.is_some_and(|s| s.reads_cursor()) {
            true => store.cursor(&entry.flow).await.map_err(fail)?,
            false => None,
        };
        let held = runs
            .iter()
            .find(|r| r.ended_at.is_some())
            .map_or(0, |r| r.held);
        total_held += held;
        rows.push((entry, spec, runs, dead, cursor, held));
    }
    let leases = store.leases().await.map_err(fail)?;
    let now_stamp = bridge_store::now();
    let holder = |flow: &str| {
        let name = bridge_store::Lease::flow_name(flow);
        leases
            .iter()
            .find(|l| l.name == name && l.live_at(&now_stamp))
            .cloned()
    };
    let dead_total = dead_letter.len();
    let pending = store.inbox_pending().await.map_err(fail)?.len();
    let mappings = app.catalog.mappings();

    let body = html! {
        @if dead_total > 0 || total_held > 0 {
            p.banner.warning role="status" {
                (dead_total) " record(s) in the dead letter, " (total_held) " held in the last runs. "
                a href="/attention" { "See what needs attention" }
            }
        }
        table {
            thead { tr {
                th { "Flow" } th { "Schedule (UTC)" } th { "Next run" } th { "Last run" }
                th { "Last success" } th { "Last delivered" } th.num { "Held" } th.num { "Dead letter" } th { "Cursor" }
                th { "Running on" }
            } }
            tbody {
                @for (entry, spec, runs, dead, cursor, held) in &rows {
                    tr id={"flow-" (entry.flow)} {
                        td {
                            strong { (entry.flow) }
                            @if let Some(spec) = spec { div.todo { (spec.title) } }
                        }
                        td { code { (entry.expression) } }
                        td {
                            @match entry.schedule.after(&now).next() {
                                Some(next) => (view::at(next)),
                                None => span.none { "no more fire times" },
                            }
                        }
                        td {
                            @match runs.first() {
                                Some(r) => {
                                    a href={"/runs/" (r.id)} { (view::time(Some(&r.started_at))) }
                                    " " (view::badge(&r.outcome))
                                }
                                None => span.none { "never" },
                            }
                        }
                        td { (view::time(runs.iter().find(|r| r.got_through()).and_then(|r| r.ended_at.as_deref()))) }
                        td { (view::time(runs.iter().find(|r| r.delivered > 0).and_then(|r| r.ended_at.as_deref()))) }
                        td.num { @if *held > 0 { a href="/attention" { (held) } } @else { "0" } }
                        td.num { @if *dead > 0 { a href="/attention" { (dead) } } @else { "0" } }
                        td { @match cursor { Some(c) => code { (c) }, None => span.none { "–" } } }
                        td {
                            @match holder(&entry.flow) {
                                Some(l) => {
                                    code { (l.owner) }
                                    @if l.owner == app.replica.id { " (this replica)" }
                                    div.todo { "lease until " (view::time(Some(&l.expires_at))) ", token " (l.token) }
                                }
                                None => span.none { "not running" },
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() {
            p.banner { "No flow is scheduled: the [schedule] section of bridge.toml is empty." }
        }
        h2 { "Service" }
        dl.facts {
            dt { "This replica" }
            dd { code { (app.replica.id) } " (lease " (app.replica.lease_ttl.as_secs()) " s)" }
            dt { "State database" }
            dd { @match app.store.fault() { Some(code) => (view::badge(code)), None => (view::badge("ok")) } }
            dt { "Jobs loaded" }
            dd { a href="/jobs" { (app.catalog.job_names().count()) } }
            dt { "Mapping folder" }
            dd { (mappings.deployment.country) " " (view::hash(Some(&mappings.content_hash))) }
            dt { "Inbox messages waiting" }
            dd { a href="/inbox" { (pending) } }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/", "Flows", body),
    ))
}

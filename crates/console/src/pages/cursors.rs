//! `/cursors`: where each cursor flow of this deployment reads from next,
//! and (operators) a form to move it.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::html;

use super::{known_flow, store_failed, PageResult};
use crate::auth::Caller;
use crate::{view, Console};
use bridge_flows::registry;

#[derive(serde::Deserialize)]
pub struct CursorQuery {
    /// Set after a move: the flow whose cursor moved.
    moved: Option<String>,
}

pub async fn page(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Query(q): Query<CursorQuery>,
) -> PageResult {
    let app = &console.service.app;
    let design = app.catalog.mappings().deployment.design.clone();
    let flows: Vec<&str> = registry::cursor_names()
        .into_iter()
        .filter(|f| registry::cursor_move_refusal(f, &design).is_none())
        .collect();
    let mut rows = Vec::new();
    for flow in flows {
        let value = app
            .store
            .cursor(flow)
            .await
            .map_err(|e| store_failed(&caller, e))?;
        let initial = app.initial_cursors.get(flow).copied();
        rows.push((flow, value, initial));
    }
    let now = Utc::now();
    let moved = q.moved.as_deref().and_then(known_flow);
    let body = html! {
        p.lead { "A cursor flow reads the Primero records changed since its cursor. Moving it back sends again what changed since then (records already delivered are recognised and not sent twice); moving it forward skips what changed in between." }
        @if let Some(flow) = moved {
            (view::banner("done", &format!("The cursor of {flow} was moved; its next run reads from the value below.")))
        }
        table {
            thead { tr { th { "Flow" } th { "Cursor" } th { "Initial cursor (bridge.toml)" } th { "" } } }
            tbody {
                @for (flow, value, initial) in &rows {
                    tr id={"cursor-" (flow)} {
                        td { strong { (flow) } }
                        td {
                            @match value {
                                Some(v) => {
                                    code { (v) }
                                    @if DateTime::parse_from_rfc3339(v).is_ok_and(|t| t > now) {
                                        div.todo { "in the future: records changed before then are not read" }
                                    }
                                }
                                None => span.none { "none yet" },
                            }
                        }
                        td { @match initial { Some(t) => code { (t.to_rfc3339()) }, None => span.none { "–" } } }
                        td {
                            @if caller.is_operator() {
                                form.inline method="post" action={"/cursors/" (flow)} {
                                    (view::csrf_field(&caller))
                                    label for={"to-" (flow)} { "Move to" }
                                    input id={"to-" (flow)} type="text" name="to" placeholder="2025-06-01T00:00:00Z" required;
                                    button type="submit" { "Move" }
                                }
                            } @else {
                                span.none { "an operator moves it" }
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() {
            p.banner { "No flow of this deployment's design reads a cursor." }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/cursors", "Cursors", body),
    ))
}

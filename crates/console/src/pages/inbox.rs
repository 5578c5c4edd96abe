//! `/inbox`: the messages DTP pushed that are kept (sealed) until processed:
//! ids, kinds, states, attempts and which API key id accepted each. Never a
//! body.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use super::{store_failed, PageResult};
use crate::auth::Caller;
use crate::{view, Console};

pub async fn page(State(console): State<Arc<Console>>, caller: Caller) -> PageResult {
    let app = &console.service.app;
    let fail = |e| store_failed(&caller, e);
    let messages = app.store.inbox_all().await.map_err(fail)?;
    let states: HashMap<String, String> = app
        .store
        .inbox_states()
        .await
        .map_err(fail)?
        .into_iter()
        .collect();
    let body = html! {
        p.lead { "A message is kept sealed from the moment the inbox accepts it until it is processed; then it is deleted. A message that keeps failing is set aside (dead) and listed in the dead letter for a replay." }
        @if app.inbox.is_none() && messages.is_empty() {
            p.banner { "This service runs no inbox (the PING design, or no [inbox] section): nothing is pushed to it." }
        } @else if messages.is_empty() {
            p.banner { "The inbox queue is empty: every message received was processed." }
        } @else {
            table {
                thead { tr { th { "Receipt id" } th { "Kind" } th { "State" } th { "Received" } th.num { "Attempts" } th { "API key id" } th { "Claimed by" } } }
                tbody {
                    @for m in &messages {
                        tr {
                            td { code { (m.id) } }
                            td { (m.kind) }
                            td { (view::badge(states.get(&m.id).map_or("pending", String::as_str))) }
                            td { (view::time(Some(&m.received_at))) }
                            td.num { (m.attempts) }
                            td { (m.api_key_id.as_deref().unwrap_or("–")) }
                            td { @match &m.claimed_by { Some(r) => code { (r) }, None => span.none { "–" } } }
                        }
                    }
                }
            }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/inbox", "Inbox", body),
    ))
}

//! What an operator changes from the console: replay a dead-letter entry,
//! move a cursor. Each takes the flow's run gate (never beside a run of the
//! same flow) and is logged with the account name.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};

use crate::auth::{Caller, CsrfForm};
use crate::pages::{store_failed, PageResult};
use crate::{view, Console};
use bridge_flows::app::ReplaySelection;
use bridge_flows::lease::{FlowLease, NotRun};
use bridge_flows::outbound_referrals::format_cursor;
use bridge_flows::registry;

fn busy(caller: &Caller, flow: &str) -> Response {
    view::problem(
        StatusCode::CONFLICT,
        Some(caller),
        "A run is going",
        &format!(
            "A run of {flow} is going now. Nothing was changed: try again when it ends (the Runs \
             page shows it)."
        ),
    )
}

/// POST /dead-letter/{id}/replay.
pub async fn replay(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    caller.may_change(&form.csrf, "replay")?;
    let app = &console.service.app;
    let entry = app
        .store
        .dead_letter_get(id)
        .await
        .map_err(|e| store_failed(&caller, e))?;
    let Some(entry) = entry else {
        return Err(view::problem(
            StatusCode::NOT_FOUND,
            Some(&caller),
            "No such entry",
            &format!("There is no dead-letter entry {id}."),
        ));
    };
    if let Some(at) = &entry.replayed_at {
        return Err(view::problem(
            StatusCode::CONFLICT,
            Some(&caller),
            "Already replayed",
            &format!("Dead-letter entry {id} was already replayed at {at}: see the Runs page."),
        ));
    }
    let Some(_gate) = app.gates.try_hold(&entry.flow) else {
        return Err(busy(&caller, &entry.flow));
    };
    tracing::info!(
        account = %caller.account,
        action = "replay",
        dead_letter = id,
        flow = %entry.flow,
        record = %entry.source_id,
        "operator action: replay of a dead-letter entry"
    );
    match app.replay(ReplaySelection::One(id)).await {
        Ok(reports) => {
            let delivered: usize = reports
                .iter()
                .map(|r| {
                    r.records
                        .iter()
                        .filter(|x| x.outcome.is_delivered())
                        .count()
                })
                .sum();
            tracing::info!(
                account = %caller.account,
                action = "replay",
                dead_letter = id,
                flow = %entry.flow,
                runs = reports.len(),
                delivered,
                "operator action: replay finished"
            );
            Ok(match reports.first() {
                Some(report) => {
                    Redirect::to(&format!("/runs/{}?replayed={id}", report.run_id)).into_response()
                }
                // An inbox message made pending again, processed by the inbox.
                None => Redirect::to("/inbox").into_response(),
            })
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(account = %caller.account, action = "replay", dead_letter = id, error = %message, "operator action: replay failed");
            Err(view::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&caller),
                "Replay failed",
                &format!("The replay of dead-letter entry {id} did not run: {message}"),
            ))
        }
    }
}

#[derive(serde::Deserialize)]
pub struct CursorForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
}

/// POST /cursors/{flow}.
pub async fn move_cursor(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Path(flow): Path<String>,
    Form(form): Form<CursorForm>,
) -> PageResult {
    caller.may_change(&form.csrf, "cursor-set")?;
    let app = &console.service.app;
    let design = app.catalog.mappings().deployment.design.clone();
    if let Some(refusal) = registry::cursor_move_refusal(&flow, &design) {
        return Err(view::problem(
            StatusCode::BAD_REQUEST,
            Some(&caller),
            "Cursor not moved",
            &refusal,
        ));
    }
    let Ok(at) = DateTime::parse_from_rfc3339(form.to.trim()).map(|t| t.with_timezone(&Utc)) else {
        return Err(view::problem(
            StatusCode::BAD_REQUEST,
            Some(&caller),
            "Cursor not moved",
            "That is not an RFC 3339 date-time with its offset, e.g. 2025-06-01T00:00:00Z.",
        ));
    };
    let Some(_gate) = app.gates.try_hold(&flow) else {
        return Err(busy(&caller, &flow));
    };
    // The flow's lease too: no replica's run of it is going, and none
    // starts until the cursor is moved.
    let lease = match FlowLease::take(app.store.clone(), &app.replica, &flow, &app.stop).await {
        Ok(lease) => lease,
        Err(e) if e.downcast_ref::<NotRun>().is_some() => return Err(busy(&caller, &flow)),
        Err(e) => {
            return Err(view::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&caller),
                "Cursor not moved",
                &format!("{e:#}"),
            ))
        }
    };
    let moved = async {
        let old = app.store.cursor(&flow).await?;
        let new = format_cursor(at);
        app.store
            .set_cursor_fenced(&lease.fence(), &flow, &new)
            .await?;
        Ok::<_, bridge_store::StoreError>((old, new))
    }
    .await;
    lease.release().await;
    let (old, new) = moved.map_err(|e| store_failed(&caller, e))?;
    tracing::info!(
        account = %caller.account,
        action = "cursor-set",
        flow = %flow,
        from = old.as_deref().unwrap_or("none"),
        to = %new,
        "operator action: cursor moved"
    );
    Ok(Redirect::to(&format!("/cursors?moved={flow}")).into_response())
}

//! One module per page. Each reads what it shows from the running service
//! (its state database, its catalog of jobs and mappings) at request time.

pub mod attention;
pub mod cursors;
pub mod inbox;
pub mod jobs;
pub mod overview;
pub mod runs;
pub mod safeguards;

use axum::http::StatusCode;
use axum::response::Response;

use crate::auth::Caller;
use crate::view;

/// A page's answer; the error is the page that says what went wrong.
pub type PageResult = Result<Response, Response>;

/// The state database could not answer: say so (the service log and
/// `/readyz` carry the details).
pub fn store_failed(caller: &Caller, e: bridge_store::StoreError) -> Response {
    tracing::warn!(account = %caller.account, code = e.code(), "console: the state database could not answer");
    view::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(caller),
        "State database unavailable",
        &format!(
            "The state database could not answer ({}). The service log says more; `/readyz` \
             reports it too.",
            e.code()
        ),
    )
}

/// A flow name from a URL or form, when it is a flow this bridge knows.
pub fn known_flow(name: &str) -> Option<&'static str> {
    bridge_flows::registry::get(name).map(|f| f.name)
}

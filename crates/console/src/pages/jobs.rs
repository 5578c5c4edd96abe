//! `/jobs`: the job versions the service serves now (hot reload swaps them)
//! with their content hashes, and the mapping folder's hash: what a run
//! record's hashes are compared with.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use super::PageResult;
use crate::auth::Caller;
use crate::{view, Console};

pub async fn page(State(console): State<Arc<Console>>, caller: Caller) -> PageResult {
    let catalog = &console.service.app.catalog;
    let jobs: Vec<_> = catalog
        .job_names()
        .filter_map(|name| catalog.job(name))
        .collect();
    let mappings = catalog.mappings();
    let body = html! {
        p.lead { "What serves the flows now. A changed component or mapping file is loaded, checked and swapped in without a restart; a run keeps the versions it started with and records their hashes." }
        h2 { "Jobs" }
        table {
            thead { tr { th { "Job" } th { "Version" } th { "Flow" } th { "Content hash (SHA-256)" } th { "Mapping tables read" } } }
            tbody {
                @for job in &jobs {
                    tr {
                        td { strong { (job.name) } }
                        td { (job.info.version) }
                        td { (job.info.flow) }
                        td { code.id { (job.content_hash) } }
                        td { (job.info.tables.join(", ")) }
                    }
                }
            }
        }
        h2 { "Mappings" }
        dl.facts {
            dt { "Country" } dd { (mappings.deployment.country) }
            dt { "Design" } dd { (mappings.deployment.design) }
            dt { "Content hash" } dd { code.id { (mappings.content_hash) } }
            dt { "Tables" } dd { (mappings.tables.len()) }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page(&console, &caller, "/jobs", "Jobs & mappings", body),
    ))
}

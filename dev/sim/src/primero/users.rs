//! Users: driving methods and `GET /api/v2/users`.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::query::{page_bounds, DEFAULT_PER};
use super::records::SimUser;
use super::state::PrimeroSim;

impl PrimeroSim {
    /// Add a user; its `id` and timestamps are assigned. Returns the id.
    pub fn add_user(&self, mut user: SimUser) -> u64 {
        let mut st = self.lock();
        user.id = st.users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
        let now = st.clock.tick_string();
        if user.created_at.is_empty() {
            user.created_at = now.clone();
        }
        user.updated_at = now;
        let id = user.id;
        st.users.push(user);
        id
    }

    pub fn users(&self) -> Vec<SimUser> {
        self.lock().users.clone()
    }
}

pub(super) async fn list_users(
    State(sim): State<PrimeroSim>,
    RawQuery(query): RawQuery,
) -> Response {
    let st = sim.lock();
    let mut page = 1usize;
    let mut per = DEFAULT_PER;
    let mut user_name = None;
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "page" => page = value.trim().parse().unwrap_or(1).max(1),
            "per" => per = value.trim().parse().unwrap_or(DEFAULT_PER).max(1),
            // `PermittedUsersService`: `where(user_name: …)`, exact.
            "user_name" if !value.is_empty() => user_name = Some(value.into_owned()),
            _ => {}
        }
    }
    per = per.min(st.config.max_per.max(1));
    let users: Vec<&SimUser> = st
        .users
        .iter()
        .filter(|u| user_name.as_ref().is_none_or(|n| *n == u.user_name))
        .collect();
    let total = users.len();
    let (start, end) = page_bounds(total, page, per);
    let total_enabled = users.iter().filter(|u| !u.disabled).count();
    Json(json!({
        "data": &users[start..end],
        "metadata": { "total": total, "per": per, "page": page, "total_enabled": total_enabled },
    }))
    .into_response()
}

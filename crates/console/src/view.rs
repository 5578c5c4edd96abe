//! The frame every page shares (navigation, account, deployment), the
//! stylesheet, and the small pieces pages are made of.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::auth::Caller;
use crate::Console;

const STYLESHEET: &str = include_str!("console.css");

/// GET /console.css.
pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

/// The pages, as the navigation lists them: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/", "Flows"),
    ("/runs", "Runs"),
    ("/attention", "Needs attention"),
    ("/cursors", "Cursors"),
    ("/jobs", "Jobs & mappings"),
    ("/inbox", "Inbox"),
    ("/consent", "Consent alerts"),
    ("/audit", "Audit trail"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · referral bridge" }
            link rel="stylesheet" href="/console.css";
        }
    }
}

/// A page without navigation (the login form, errors before a login).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                header.top { span.brand { "referral bridge" } }
                main { (body) }
            }
        }
    }
}

/// A page of the console: `path` marks the current navigation entry.
pub fn page(console: &Console, caller: &Caller, path: &str, title: &str, body: Markup) -> Markup {
    let mappings = console.service.app.catalog.mappings();
    let deployment = &mappings.deployment;
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    span.brand { "referral bridge" }
                    span.deployment { (deployment.country) " · " (deployment.design) " design" }
                    @if console.service.app.store.fault().is_some() {
                        span.badge.bad title="the state database is failing: see the service log" {
                            "state database: " (console.service.app.store.fault().unwrap_or_default())
                        }
                    }
                    form.account method="post" action="/logout" {
                        span { (caller.account) " (" (caller.role.as_str()) ")" }
                        input type="hidden" name="csrf" value=(caller.csrf());
                        button.link type="submit" { "Log out" }
                    }
                }
                nav {
                    @for (href, label) in NAV {
                        @if *href == path {
                            a.current href=(href) aria-current="page" { (label) }
                        } @else {
                            a href=(href) { (label) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer {
                    "Shows system ids, codes, statuses and times only. Times are UTC."
                }
            }
        }
    }
}

/// An HTML answer with a status.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, axum::response::Html(markup.into_string())).into_response()
}

/// A page that says what went wrong and what to do.
pub fn problem(
    status: StatusCode,
    caller: Option<&Caller>,
    title: &str,
    message: &str,
) -> Response {
    let body = html! {
        h1 { (title) }
        p.banner.error role="alert" { (message) }
        p {
            @if caller.is_some() { a href="/" { "Back to the flows" } }
            @else { a href="/login" { "Log in" } }
        }
    };
    respond(status, bare(title, body))
}

/// Fallback: 404.
pub async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        None,
        "Not found",
        "There is no such page in the console.",
    )
}

/// A banner above a page's content.
pub fn banner(kind: &str, text: &str) -> Markup {
    html! { p class={"banner " (kind)} role="status" { (text) } }
}

/// A stored time (RFC 3339) as `2025-06-01 10:05:00`, the full value on hover.
pub fn time(raw: Option<&str>) -> Markup {
    match raw.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => at(t.with_timezone(&Utc)),
        None => html! { span.none { (raw.unwrap_or("–")) } },
    }
}

/// A time, with how long ago (or from now) it is.
pub fn at(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) {
            (t.format("%Y-%m-%d %H:%M:%S")) " " span.ago { "(" (relative(t, Utc::now())) ")" }
        }
    }
}

/// "5 min ago", "in 2 h".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let span = match n {
        0..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} days", n / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A status or outcome, coloured by what it means for the operator.
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "ok" | "created" | "updated" | "already-present" | "sent" | "already-sent" | "pending"
        | "delivered" | "recorded" => "good",
        "partial" | "held" | "skipped" | "stopped" | "running" | "in-dead-letter"
        | "no-consent" | "would-write" | "overridden" => "warn",
        "failed" | "aborted" | "dead-lettered" | "interrupted" | "consent-revoked" | "dead" => {
            "bad"
        }
        _ => "plain",
    };
    html! { span class={"badge " (class)} { (status) } }
}

/// A content hash, shortened, the full value on hover and for copying.
pub fn hash(full: Option<&str>) -> Markup {
    match full {
        Some(h) => html! { code.hash title=(h) { (h.get(..12).unwrap_or(h)) "…" } },
        None => html! { span.none { "–" } },
    }
}

/// Links that narrow a list (`path?flow=…`) to one scheduled flow, or all.
pub fn flow_filter(console: &Console, path: &str, current: Option<&str>) -> Markup {
    html! {
        div.filters {
            "Flow: "
            @if current.is_none() { strong { "all" } } @else { a href=(path) { "all" } }
            @for entry in &console.service.schedule {
                @if current == Some(entry.flow.as_str()) { strong { (entry.flow) } }
                @else { a href={(path) "?flow=" (entry.flow)} { (entry.flow) } }
            }
        }
    }
}

/// A hidden CSRF field for a form.
pub fn csrf_field(caller: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(caller.csrf()); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(relative(t("2025-06-01T11:59:30Z"), now), "30 s ago");
        assert_eq!(relative(t("2025-06-01T11:00:00Z"), now), "1 h ago");
        assert_eq!(relative(t("2025-06-01T11:10:00Z"), now), "50 min ago");
        assert_eq!(relative(t("2025-06-01T06:00:00Z"), now), "6 h ago");
        assert_eq!(relative(t("2025-06-01T12:15:00Z"), now), "in 15 min");
        assert_eq!(relative(t("2025-05-20T12:00:00Z"), now), "12 days ago");
    }

    #[test]
    fn text_is_escaped() {
        let m = badge("<script>");
        assert!(m.into_string().contains("&lt;script&gt;"));
    }
}

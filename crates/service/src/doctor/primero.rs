//! Primero checks: reachable, authenticated read, filters that really
//! narrow, the deployment's users, and referrals to the UNHCR user.
//!
//! Only GETs (and, in token mode, the login at `POST /api/v2/tokens`, which
//! opens a session and writes no record). A case's content is never shown:
//! counts and record ids at most.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{shown_url, transport_fix, Finding};
use crate::config::{BridgeConfig, SecretRef};
use bridge_mappings::Deployment;
use bridge_partners::primero::{CaseQuery, PrimeroClient, User};
use bridge_partners::{ConnectorError, RetryPolicy};

/// Cases (associated with the UNHCR user) whose referrals are listed.
const REFERRAL_SAMPLE: u32 = 10;

/// Case permissions under which Primero lets a role see referrals it is
/// neither owner nor recipient of (`User#can_view_referrals?`).
const REFERRAL_VIEW_ACTIONS: &[&str] = &[
    "referral_from_service",
    "remove_assigned_users",
    "referral",
    "receive_referral",
    "receive_referral_different_module",
];

/// How a filter is probed: with a well-formed value no case can have.
struct FilterProbe {
    field: &'static str,
    value: String,
    query: CaseQuery,
    /// Which flows rely on it, for the message.
    used_by: &'static str,
}

fn filter_probes(unhcr_user: Option<&str>) -> Vec<FilterProbe> {
    // proGres individual numbers are `<office>-<digits>`; office 000 does not exist.
    let individual = "000-000000000".to_string();
    // A fresh v4 UUID: no Primero record has it.
    let case_id = uuid::Uuid::new_v4().to_string();
    let nobody = format!(
        "bridge-doctor-no-such-user-{}",
        uuid::Uuid::new_v4().simple()
    );
    let mut probes = vec![
        FilterProbe {
            field: "unhcr_individual_no",
            query: CaseQuery::new().unhcr_individual_no(&individual).per(1),
            value: individual,
            used_by: "matching a proGres referral to its case (PING 1.1, DTP 1-1)",
        },
        FilterProbe {
            field: "case_id",
            query: CaseQuery::new().case_id(&case_id).per(1),
            value: case_id,
            used_by: "finding the case of a proGres decision (PING 2.2, DTP 2-3)",
        },
    ];
    if unhcr_user.is_some() {
        probes.push(FilterProbe {
            field: "associated_user_names",
            query: CaseQuery::new().associated_user_name(&nobody).per(1),
            value: nobody,
            used_by: "reading the cases referred to the UNHCR user (PING 2.1, DTP 2-1)",
        });
    }
    probes
}

/// How a secret is configured, for a fix text (never its value).
pub(crate) fn secret_source(key: &str, secret: &SecretRef) -> String {
    match (&secret.env, &secret.file) {
        (Some(var), _) => format!("`{key}` (environment variable {var})"),
        (None, Some(file)) => format!("`{key}` (file {})", file.display()),
        (None, None) => format!("`{key}`"),
    }
}

pub async fn check(config: &BridgeConfig, deployment: Option<&Deployment>, out: &mut Vec<Finding>) {
    let file = config.file.display().to_string();
    let section = &config.primero;
    let url = shown_url(&section.base_url);
    let mut client_config = match config.primero_client_config() {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::error(
                "primero.config",
                e.to_string(),
                format!("fix the key named in {file}"),
            ));
            return;
        }
    };
    client_config.retry = RetryPolicy::none();
    let client = match PrimeroClient::new(client_config) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::error(
                "primero.config",
                e.to_string(),
                format!("`primero.base_url` and `primero.user_name` in {file}"),
            ));
            return;
        }
    };
    let api_user = section.user_name.clone();

    // Reachable, and an authenticated read: one page of one case.
    let scope_total = match client.list_cases_page(&CaseQuery::new().per(1), 1).await {
        Ok(page) => {
            out.push(Finding::ok(
                "primero.reachable",
                format!("Primero answered at {url}"),
            ));
            out.push(Finding::ok(
                "primero.auth",
                format!(
                    "authenticated read as `{api_user}` ({} auth): GET /api/v2/cases answered; {} case(s) in the API user's scope",
                    section.auth, page.total
                ),
            ));
            page.total
        }
        Err(e) => {
            first_call_failed(config, &api_user, &url, &e, out);
            return;
        }
    };

    let unhcr_user = deployment.and_then(|d| d.unhcr_user.as_deref());
    let mut narrowing = BTreeSet::new();
    for probe in filter_probes(unhcr_user) {
        if check_filter(&client, &api_user, scope_total, &probe, out).await {
            narrowing.insert(probe.field);
        }
    }

    let Some(deployment) = deployment else {
        return;
    };
    check_user(&client, config, deployment, "intake_user", &api_user, out).await;
    let unhcr = check_user(&client, config, deployment, "unhcr_user", &api_user, out).await;
    if let (Some(unhcr_name), Some(unhcr)) = (unhcr_user, unhcr) {
        check_referrals(
            &client,
            &api_user,
            unhcr_name,
            &unhcr,
            narrowing.contains("associated_user_names"),
            out,
        )
        .await;
    }
}

/// The first call failed: say whether Primero was reached, and why not.
fn first_call_failed(
    config: &BridgeConfig,
    api_user: &str,
    url: &str,
    err: &ConnectorError,
    out: &mut Vec<Finding>,
) {
    let file = config.file.display().to_string();
    match err {
        ConnectorError::Transport { cause, .. } => out.push(Finding::error(
            "primero.reachable",
            format!("{} at {url}", cause.describe()),
            transport_fix(*cause, "primero.base_url", &file),
        )),
        ConnectorError::Auth { reason, .. } => {
            out.push(Finding::ok(
                "primero.reachable",
                format!("Primero answered at {url}"),
            ));
            out.push(Finding::error(
                "primero.auth",
                format!("Primero refused the credentials of `{api_user}`: {reason}"),
                format!(
                    "`primero.user_name` and the password named by {} in {file} (and `primero.auth`: \"basic\", or \"v2.10-token\" for Primero v2.10 and older); after 6 failed logins Primero locks the account for 30 minutes, so correct before retrying",
                    secret_source("primero.password", &config.primero.password)
                ),
            ));
        }
        ConnectorError::Status { status: 403, .. } => {
            out.push(Finding::ok(
                "primero.reachable",
                format!("Primero answered at {url}"),
            ));
            out.push(Finding::error(
                "primero.auth",
                format!("`{api_user}` logged in but may not list cases (HTTP 403)"),
                format!("Primero: give the role of `{api_user}` case read access (Cases: view/search)"),
            ));
        }
        ConnectorError::Status { status, reason, .. } => out.push(Finding::error(
            "primero.reachable",
            format!("GET /api/v2/cases at {url} answered HTTP {status}: {reason}"),
            if *status == 404 {
                format!("`primero.base_url` in {file} must be the instance root (the bridge adds /api/v2/…)")
            } else {
                format!("Primero at {url} is failing: ask its administrators, then run doctor again")
            },
        )),
        ConnectorError::Protocol { reason, .. } => out.push(Finding::error(
            "primero.reachable",
            format!("{url} answered something that is not Primero's API: {reason}"),
            format!("`primero.base_url` in {file} must be the Primero instance root"),
        )),
        // Doctor only reads; a refused write here is a bug in doctor itself.
        ConnectorError::ReadOnly { endpoint, .. } => out.push(Finding::error(
            "primero.reachable",
            format!("doctor tried a write ({endpoint}) on a read-only client"),
            "report this as a bug in the bridge".to_string(),
        )),
    }
}

/// One filter: a value no case has must match no case. Returns whether the
/// filter was seen to narrow.
async fn check_filter(
    client: &PrimeroClient,
    api_user: &str,
    scope_total: u64,
    probe: &FilterProbe,
    out: &mut Vec<Finding>,
) -> bool {
    let check = format!("primero.filter.{}", probe.field);
    let page = match client.list_cases_page(&probe.query, 1).await {
        Ok(page) => page,
        Err(e) => {
            out.push(Finding::error(
                check,
                format!(
                    "GET /api/v2/cases filtered on `{}` failed: {e}",
                    probe.field
                ),
                format!(
                    "Primero: the role of `{api_user}` must be able to search cases by `{}`",
                    probe.field
                ),
            ));
            return false;
        }
    };
    // A row carrying exactly the value asked for would be a real match.
    let genuine = !page.data.is_empty()
        && page.data.iter().all(|case| {
            let value = match probe.field {
                "unhcr_individual_no" => case.unhcr_individual_no.clone(),
                "case_id" => case.case_id.clone(),
                other => case
                    .extra
                    .get(other)
                    .and_then(Value::as_array)
                    .and_then(|names| {
                        names
                            .iter()
                            .filter_map(Value::as_str)
                            .find(|n| *n == probe.value)
                            .map(str::to_string)
                    }),
            };
            value.as_deref() == Some(probe.value.as_str())
        });
    if page.total == 0 && page.data.is_empty() || genuine {
        if scope_total == 0 {
            out.push(Finding::warning(
                check,
                format!(
                    "cannot conclude: the scope of `{api_user}` holds no case, so a dropped filter on `{}` would look the same as a working one",
                    probe.field
                ),
                "run `bridge doctor` again once the API user's scope holds cases (a filter Primero drops returns the whole scope)",
            ));
            return false;
        }
        out.push(Finding::ok(
            check,
            format!(
                "filter on `{}` narrows: a value no case has matched 0 of the {scope_total} case(s) in scope",
                probe.field
            ),
        ));
        return true;
    }
    out.push(Finding::error(
        check,
        format!(
            "filter on `{}` is dropped: a value no case has matched {} case(s) ({} in scope); Primero (v2.11+) silently drops a filter on a field the role may not read and returns the whole scope. Needed for {}",
            probe.field, page.total, scope_total, probe.used_by
        ),
        format!(
            "Primero: give the role of `{api_user}` read access to the field `{}` (the form holding it among the role's permitted forms); until then the bridge must not run",
            probe.field
        ),
    ));
    false
}

/// `GET /api/v2/users?user_name=` for a deployment user; the answer's row
/// must carry exactly the name asked. Returns the user when found.
async fn check_user(
    client: &PrimeroClient,
    config: &BridgeConfig,
    deployment: &Deployment,
    key: &str,
    api_user: &str,
    out: &mut Vec<Finding>,
) -> Option<User> {
    let check = format!("primero.user.{key}");
    let deployment_key = format!("deployment.{key}");
    let dir = config.resolve(&config.jobs.mappings);
    let where_key = format!(
        "`{deployment_key}` in {}",
        dir.join(bridge_mappings::DEPLOYMENT_FILE).display()
    );
    let name = match key {
        "intake_user" => deployment.intake_user.as_deref(),
        _ => deployment.unhcr_user.as_deref(),
    };
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
        out.push(Finding::error(
            check,
            format!("{deployment_key} is not set"),
            format!("set {where_key} to the Primero user name"),
        ));
        return None;
    };
    let found = match client.users_named(name, false).await {
        Ok(page) => {
            let exact = page.data.iter().find(|u| u.user_name == name).cloned();
            let others = page.data.iter().filter(|u| u.user_name != name).count();
            if exact.is_none() && others > 0 {
                // The filter was not applied: look through every user.
                match client.list_users().await {
                    Ok(all) => all.into_iter().find(|u| u.user_name == name),
                    Err(e) => {
                        out.push(Finding::error(
                            check,
                            format!("listing users failed: {e}"),
                            format!("Primero: the role of `{api_user}` must be able to list users"),
                        ));
                        return None;
                    }
                }
            } else {
                exact
            }
        }
        Err(ConnectorError::Status { status: 403, .. }) => {
            out.push(Finding::error(
                check,
                format!("`{api_user}` may not list users (HTTP 403), so `{name}` cannot be checked"),
                format!("Primero: give the role of `{api_user}` user read access (the flows read caseworkers' contact details too)"),
            ));
            return None;
        }
        Err(e) => {
            out.push(Finding::error(
                check,
                format!("GET /api/v2/users failed: {e}"),
                "run `bridge doctor` again; if it persists, ask the Primero administrators",
            ));
            return None;
        }
    };
    match found {
        None => {
            out.push(Finding::error(
                check,
                format!("no Primero user `{name}` visible to `{api_user}`"),
                format!(
                    "{where_key} must be the exact Primero user name; or create the user in Primero; or widen the role of `{api_user}` (users of other agencies or groups are hidden without agency read or `all` scope; admin users are hidden from non-admins)"
                ),
            ));
            None
        }
        Some(user) if user.extra.get("disabled").and_then(Value::as_bool) == Some(true) => {
            out.push(Finding::error(
                check,
                format!("Primero user `{name}` exists but is disabled"),
                format!(
                    "Primero: enable the user `{name}`, or point {where_key} at an enabled one"
                ),
            ));
            Some(user)
        }
        Some(user) => {
            let id = user
                .extra
                .get("id")
                .map(|v| format!(" (user id {v})"))
                .unwrap_or_default();
            out.push(Finding::ok(
                check,
                format!("Primero user `{name}` exists{id}"),
            ));
            Some(user)
        }
    }
}

/// What the API user's role allows, from its user record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RoleVerdict {
    /// Primero's rules say the referrals are visible.
    Visible(String),
    /// Primero's rules say they are not.
    Hidden(String),
    /// Depends on data the API does not show; says what.
    Unsure(String),
}

fn str_list(user: &User, key: &str) -> BTreeSet<String> {
    user.extra
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Primero's `referrals_for_user` (app/models/concerns/transitionable.rb),
/// applied to referrals to `unhcr` on cases the API user does not own.
fn role_verdict(api: &User, unhcr: &User) -> RoleVerdict {
    if api.user_name == unhcr.user_name {
        return RoleVerdict::Visible("the API user is the UNHCR user".into());
    }
    let scope = api
        .extra
        .get("role_group_permission")
        .and_then(Value::as_str)
        .map(str::to_string);
    let case_actions: Option<BTreeSet<String>> = api
        .extra
        .get("permissions")
        .and_then(|p| p.get("list"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|p| p.get("resource").and_then(Value::as_str) == Some("cases"))
                .filter_map(|p| p.get("actions").and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let can_view_referrals = case_actions.as_ref().map(|actions| {
        actions.contains("manage") || REFERRAL_VIEW_ACTIONS.iter().any(|a| actions.contains(*a))
    });
    match (scope.as_deref(), can_view_referrals) {
        (None, _) => RoleVerdict::Unsure(
            "the users API did not show the role's group permission".into(),
        ),
        (Some("all"), _) => RoleVerdict::Visible("the role's scope is `all`".into()),
        (Some("self"), _) => RoleVerdict::Hidden(
            "the role's scope is `self`: it sees only referrals to the API user and on cases it owns".into(),
        ),
        (Some("group" | "agency"), Some(false)) => RoleVerdict::Hidden(format!(
            "the role's scope is `{}` but it has none of the case permissions that show other users' referrals ({})",
            scope.unwrap_or_default(),
            REFERRAL_VIEW_ACTIONS.join(", ")
        )),
        (Some("group"), _) => {
            let shared: Vec<String> = str_list(api, "user_group_unique_ids")
                .intersection(&str_list(unhcr, "user_group_unique_ids"))
                .cloned()
                .collect();
            if shared.is_empty() {
                RoleVerdict::Hidden(format!(
                    "the role's scope is `group` and the API user shares no user group with `{}`",
                    unhcr.user_name
                ))
            } else if can_view_referrals.is_none() {
                RoleVerdict::Unsure(format!(
                    "the role's scope is `group` (shared group {}), but its case permissions were not shown",
                    shared.join(", ")
                ))
            } else {
                RoleVerdict::Visible(format!(
                    "the role's scope is `group`, shared with `{}` through {}",
                    unhcr.user_name,
                    shared.join(", ")
                ))
            }
        }
        (Some("agency"), _) => {
            let same = api.extra.get("agency_id").is_some()
                && api.extra.get("agency_id") == unhcr.extra.get("agency_id");
            if same {
                RoleVerdict::Unsure(format!(
                    "the role's scope is `agency` and `{}` is in the API user's agency: referrals are visible when made to that agency",
                    unhcr.user_name
                ))
            } else {
                RoleVerdict::Hidden(format!(
                    "the role's scope is `agency` and `{}` is in another agency",
                    unhcr.user_name
                ))
            }
        }
        (Some(other), _) => RoleVerdict::Hidden(format!("the role's scope is `{other}`")),
    }
}

/// Referrals to the UNHCR user: what the role allows, and what a sample of
/// the cases associated with that user shows.
async fn check_referrals(
    client: &PrimeroClient,
    api_user: &str,
    unhcr_name: &str,
    unhcr: &User,
    associated_filter_narrows: bool,
    out: &mut Vec<Finding>,
) {
    const CHECK: &str = "primero.referrals.unhcr_user";
    let role_fix = format!(
        "Primero: the role of `{api_user}` needs group permission `all`, or `group` with a user group shared with `{unhcr_name}` and a referral permission on cases (e.g. receive_referral); then run doctor again"
    );
    let verdict = match client.users_named(api_user, true).await {
        Ok(page) => match page.data.iter().find(|u| u.user_name == api_user) {
            Some(api) => role_verdict(api, unhcr),
            None => RoleVerdict::Unsure(format!(
                "the users API did not return the API user `{api_user}` itself"
            )),
        },
        Err(e) => RoleVerdict::Unsure(format!("the API user's role could not be read: {e}")),
    };

    // What the data shows: referrals listed on cases associated with the UNHCR user.
    let mut sampled = 0usize;
    let mut seen = 0usize;
    if associated_filter_narrows {
        let query = CaseQuery::new()
            .associated_user_name(unhcr_name)
            .per(REFERRAL_SAMPLE);
        match client.list_cases_page(&query, 1).await {
            Ok(page) => {
                for case in page.data.iter().take(REFERRAL_SAMPLE as usize) {
                    sampled += 1;
                    match client.list_referrals(&case.id).await {
                        Ok(referrals) => {
                            seen += referrals
                                .iter()
                                .filter(|r| r.transitioned_to.as_deref() == Some(unhcr_name))
                                .count();
                        }
                        Err(e) => {
                            out.push(Finding::error(
                                CHECK,
                                format!("listing the referrals of case {} failed: {e}", case.id),
                                role_fix.clone(),
                            ));
                            return;
                        }
                    }
                    if seen > 0 {
                        break;
                    }
                }
            }
            Err(e) => {
                out.push(Finding::error(
                    CHECK,
                    format!("listing the cases associated with `{unhcr_name}` failed: {e}"),
                    role_fix,
                ));
                return;
            }
        }
    }

    let by_hand = format!(
        "confirm by hand: refer a test case to `{unhcr_name}` in Primero as a caseworker would, then run doctor again (it must then see the referral)"
    );
    match (seen, sampled, verdict) {
        (1.., _, _) => out.push(Finding::ok(
            CHECK,
            format!("a referral to `{unhcr_name}` is visible to `{api_user}` (read on {sampled} case(s) associated with that user)"),
        )),
        (0, 1.., RoleVerdict::Visible(why) | RoleVerdict::Unsure(why)) => out.push(Finding::error(
            CHECK,
            format!("{sampled} case(s) are associated with `{unhcr_name}` but none of their referrals to that user is visible to `{api_user}` ({why}); unless those cases are only assigned, not referred, the bridge would never see a referral"),
            format!("{role_fix}; or {by_hand}"),
        )),
        (0, _, RoleVerdict::Hidden(why)) => out.push(Finding::error(
            CHECK,
            format!("referrals to `{unhcr_name}` are not visible to `{api_user}`: {why}"),
            role_fix,
        )),
        (0, 0, RoleVerdict::Visible(why)) => out.push(Finding::ok(
            CHECK,
            format!("referrals to `{unhcr_name}` are visible to `{api_user}`: {why} (no case associated with that user yet to read one)"),
        )),
        (0, 0, RoleVerdict::Unsure(why)) => out.push(Finding::warning(
            CHECK,
            format!("cannot establish that referrals to `{unhcr_name}` are visible to `{api_user}`: {why}, and no case associated with that user was found to read one"),
            by_hand,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, extra: Value) -> User {
        let mut u = User {
            user_name: name.into(),
            ..User::default()
        };
        if let Value::Object(map) = extra {
            u.extra = map;
        }
        u
    }

    #[test]
    fn role_rules_follow_primero_transitionable() {
        let unhcr = user(
            "unhcr_cw",
            serde_json::json!({"agency_id": 2, "user_group_unique_ids": ["usergroup-unhcr"]}),
        );
        let perms = |actions: &[&str]| serde_json::json!({"list": [{"resource": "cases", "actions": actions}]});
        let api = |scope: &str, extra: Value| {
            let mut v = serde_json::json!({"role_group_permission": scope, "agency_id": 1});
            for (k, x) in extra.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            user("bridge_api", v)
        };
        assert!(matches!(
            role_verdict(&api("all", Value::Null), &unhcr),
            RoleVerdict::Visible(_)
        ));
        assert!(matches!(
            role_verdict(&api("self", Value::Null), &unhcr),
            RoleVerdict::Hidden(_)
        ));
        let group = |groups: &[&str], actions: &[&str]| {
            api(
                "group",
                serde_json::json!({"user_group_unique_ids": groups, "permissions": perms(actions)}),
            )
        };
        assert!(matches!(
            role_verdict(
                &group(&["usergroup-unhcr"], &["read", "receive_referral"]),
                &unhcr
            ),
            RoleVerdict::Visible(_)
        ));
        assert!(matches!(
            role_verdict(
                &group(&["usergroup-other"], &["read", "receive_referral"]),
                &unhcr
            ),
            RoleVerdict::Hidden(_)
        ));
        assert!(matches!(
            role_verdict(&group(&["usergroup-unhcr"], &["read"]), &unhcr),
            RoleVerdict::Hidden(_)
        ));
        assert!(matches!(
            role_verdict(
                &api(
                    "agency",
                    serde_json::json!({"permissions": perms(&["referral"])})
                ),
                &unhcr
            ),
            RoleVerdict::Hidden(_)
        ));
        assert!(matches!(
            role_verdict(&user("bridge_api", serde_json::json!({})), &unhcr),
            RoleVerdict::Unsure(_)
        ));
        assert!(matches!(
            role_verdict(&user("unhcr_cw", serde_json::json!({})), &unhcr),
            RoleVerdict::Visible(_)
        ));
    }
}

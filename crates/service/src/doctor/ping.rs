//! PING checks (design "ping"): the B2C token, the API with the
//! subscription key, and one page of each retrieve shipping process of
//! deployment.toml. Ingestion processes write to proGres: they are never
//! called, only required to be set.

use super::primero::secret_source;
use super::{shown_url, transport_fix, Finding};
use crate::config::BridgeConfig;
use bridge_mappings::{MappingSet, ShippingProcesses};
use bridge_partners::ping::PingClient;
use bridge_partners::{ConnectorError, RetryPolicy};

/// The `{record_ids}` of a details retrieve: a fresh UUID no record has.
const RECORD_IDS: &str = "{record_ids}";

/// (deployment.toml key, id, needs `{record_ids}`, is a retrieve)
fn processes(sp: &ShippingProcesses) -> [(&'static str, Option<&str>, bool, bool); 7] {
    [
        (
            "pending_referrals",
            sp.pending_referrals.as_deref(),
            false,
            true,
        ),
        (
            "intervention_details",
            sp.intervention_details.as_deref(),
            true,
            true,
        ),
        ("decision_list", sp.decision_list.as_deref(), false, true),
        (
            "decision_details",
            sp.decision_details.as_deref(),
            true,
            true,
        ),
        (
            "transfer_status",
            sp.transfer_status.as_deref(),
            false,
            false,
        ),
        (
            "referral_ingestion",
            sp.referral_ingestion.as_deref(),
            false,
            false,
        ),
        (
            "decision_synced",
            sp.decision_synced.as_deref(),
            false,
            false,
        ),
    ]
}

pub async fn check(config: &BridgeConfig, mappings: &MappingSet, out: &mut Vec<Finding>) {
    let file = config.file.display().to_string();
    let deployment_file = mappings
        .dir
        .join(bridge_mappings::DEPLOYMENT_FILE)
        .display()
        .to_string();
    let Some(section) = &config.ping else {
        out.push(Finding::error(
            "ping.config",
            "deployment.design is \"ping\" but the config has no [ping] section",
            format!("add a [ping] section to {file} (see bridge.example.toml)"),
        ));
        return;
    };
    let client_config = match config.ping_client_config(&mappings.deployment) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::error(
                "ping.config",
                e.to_string(),
                format!("fix the key named (in {file}, or {deployment_file})"),
            ));
            return;
        }
    };
    let client = match PingClient::new(client_config) {
        Ok(c) => c.with_retry(RetryPolicy::none()),
        Err(e) => {
            out.push(Finding::error(
                "ping.config",
                e.to_string(),
                format!("`ping.base_url`, `ping.token_url` and `ping.subscription_key` in {file}"),
            ));
            return;
        }
    };

    let token_url = shown_url(&section.token_url);
    match client.authenticate().await {
        Ok(()) => out.push(Finding::ok(
            "ping.token",
            format!("token obtained from {token_url} for `{}`", section.username),
        )),
        Err(ConnectorError::Transport { cause, .. }) => {
            out.push(Finding::error(
                "ping.token",
                format!(
                    "token service not reached: {} at {token_url}",
                    cause.describe()
                ),
                transport_fix(cause, "ping.token_url", &file),
            ));
            return;
        }
        Err(e) => {
            out.push(Finding::error(
                "ping.token",
                format!("no token from {token_url}: {e}"),
                format!(
                    "`ping.username`, the password named by {}, `ping.client_id` and `ping.scope` in {file}, as UNHCR registered them in its B2C tenant; or `ping.token_url` (tenant and policy)",
                    secret_source("ping.password", &section.password)
                ),
            ));
            return;
        }
    }

    let base_url = shown_url(&section.base_url);
    let mut api_ok = false;
    for (key, id, details, retrieve) in processes(&mappings.shipping_processes) {
        let check = format!("ping.shipping_process.{key}");
        let set_key = format!("`shipping_processes.{key}` in {deployment_file}");
        let Some(id) = id.filter(|id| !id.trim().is_empty()) else {
            out.push(Finding::error(
                check,
                format!("shipping_processes.{key} is not set"),
                format!("set {set_key} to the id UNHCR gave for it"),
            ));
            continue;
        };
        if !retrieve {
            out.push(Finding::ok(
                check,
                format!("{id} is set; not called (an ingestion writes to proGres): confirm the id with UNHCR"),
            ));
            continue;
        }
        let record_id = uuid::Uuid::new_v4().to_string();
        let params: Vec<(&str, &str)> = if details {
            vec![(RECORD_IDS, record_id.as_str())]
        } else {
            Vec::new()
        };
        match client.retrieve_page(id, &params, None).await {
            Ok(page) => {
                if !api_ok {
                    api_ok = true;
                    api_accepted(&base_url, out);
                }
                out.push(Finding::ok(
                    check,
                    format!(
                        "{id} answered a retrieve ({} row(s) on the first page{})",
                        page.rows.len(),
                        if details {
                            ", for an id no record has"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            Err(ConnectorError::Transport { cause, .. }) => {
                out.push(Finding::error(
                    "ping.reachable",
                    format!("{} at {base_url}", cause.describe()),
                    transport_fix(cause, "ping.base_url", &file),
                ));
                return;
            }
            Err(ConnectorError::Status {
                status: status @ (401 | 403),
                reason,
                ..
            }) => {
                let key_refused = reason.to_ascii_lowercase().contains("subscription key");
                out.push(Finding::ok(
                    "ping.reachable",
                    format!("PING answered at {base_url}"),
                ));
                out.push(if key_refused {
                    Finding::error(
                        "ping.subscription_key",
                        format!("PING refused the subscription key (HTTP {status}: {reason})"),
                        format!(
                            "the key named by {} in {file} must be the APIM subscription key UNHCR issued for this partner",
                            secret_source("ping.subscription_key", &section.subscription_key)
                        ),
                    )
                } else {
                    Finding::error(
                        "ping.subscription_key",
                        format!("PING refused the call with the token (HTTP {status}: {reason})"),
                        format!("`ping.scope` and `ping.client_id` in {file}: the token must be issued for PING's API; ask UNHCR which scope"),
                    )
                });
                return;
            }
            Err(ConnectorError::Status { status, reason, .. }) if status < 500 => {
                if !api_ok {
                    api_ok = true;
                    api_accepted(&base_url, out);
                }
                let ids = reason.contains("PartnerId") || reason.contains("InteropID");
                out.push(Finding::error(
                    check,
                    format!("PING refused a retrieve of {id} (HTTP {status}: {reason})"),
                    if ids {
                        format!("`deployment.partner_id` / `deployment.interop_id` in {deployment_file}: confirm them with UNHCR")
                    } else {
                        format!("{set_key}: confirm the shipping process id with UNHCR (PING)")
                    },
                ));
            }
            Err(e) => {
                out.push(Finding::error(
                    check,
                    format!("the retrieve of {id} failed: {e}"),
                    "run `bridge doctor` again; if it persists, ask UNHCR (PING)",
                ));
            }
        }
    }
}

fn api_accepted(base_url: &str, out: &mut Vec<Finding>) {
    out.push(Finding::ok(
        "ping.reachable",
        format!("PING answered at {base_url}"),
    ));
    out.push(Finding::ok(
        "ping.subscription_key",
        "a call with the token and the subscription key was accepted",
    ));
}

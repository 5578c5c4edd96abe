//! Partner calls per delivered referral, per flow, counted by the
//! simulators, beside what the original OpenFn jobs make (issue 18 §4).
//!
//! The original jobs are the workflows of OpenFn/ping-primero
//! (`openfn-1813e824-91aa-4a3b-a49c-afa8b33af333-spec.yaml`, summarised in
//! docs/domain.md §1.B); their counts below are read off the jobs: what each
//! `each(...)` makes per item, plus what a run makes once (listings,
//! one-for-all ingestions). Logins are left out on both sides (the adaptors
//! log in per job; the bridge's PING client once per token lifetime,
//! Primero's basic authentication never).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::report::num;
use bridge_demo::scenario::Simulators;

/// Calls seen by the two simulators during one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallCount {
    /// PING, by kind and shipping process (`"retrieve SHP-2358"`, `"token"`).
    pub ping: BTreeMap<String, u64>,
    /// Primero, by `"METHOD /path/{template}"`.
    pub primero: BTreeMap<String, u64>,
}

const PING_TOKEN: &str = "token";
const PRIMERO_LOGIN: &str = "POST /api/v2/tokens";

impl CallCount {
    /// What the simulators counted so far.
    pub fn now(sims: &Simulators) -> Self {
        Self {
            ping: sims.ping_sim().call_counts(),
            primero: sims.primero_sim().request_counts(),
        }
    }

    /// The calls made since `before`.
    pub fn since(&self, before: &CallCount) -> Self {
        let delta = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0).min(*v)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Self {
            ping: delta(&self.ping, &before.ping),
            primero: delta(&self.primero, &before.primero),
        }
    }

    /// PING API calls (the token service left out).
    pub fn ping_api(&self) -> u64 {
        self.ping
            .iter()
            .filter(|(k, _)| k.as_str() != PING_TOKEN)
            .map(|(_, v)| v)
            .sum()
    }

    /// Primero API calls (logins left out).
    pub fn primero_api(&self) -> u64 {
        self.primero
            .iter()
            .filter(|(k, _)| k.as_str() != PRIMERO_LOGIN)
            .map(|(_, v)| v)
            .sum()
    }

    fn listed(map: &BTreeMap<String, u64>, skip: &str, per: f64) -> String {
        let parts: Vec<String> = map
            .iter()
            .filter(|(k, _)| k.as_str() != skip)
            .map(|(k, v)| format!("{k} {}", num(*v as f64 / per, 2)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The original job's calls for `n` referrals of a flow: (per referral,
/// per run, how).
pub fn original(flow: &str) -> Option<(f64, f64, &'static str)> {
    Some(match flow {
        "ping-1.1" => (
            4.0,
            1.0,
            "per referral: SHP-2358 retrieve, Primero search, create or update, one SHP-2748 ingestion each \
             (`each('$.data[*]', http.post(…/data))`); per run: the SHP-2747 listing (not paged)",
        ),
        "ping-1.2" => (
            0.0,
            2.0,
            "per run: one `getCases` (`per: 2000`, not paged) and one SHP-2748 ingestion with every decision",
        ),
        "ping-2.1" => (
            3.0,
            2.0,
            "per referral: the case's referrals, one SHP-2731 ingestion, one check status; per run: the case \
             listing and `/users?per=100000`",
        ),
        "ping-2.2" => (
            4.0,
            2.0,
            "per decision: SHP-2796 details, Primero case by `case_id`, its referrals, the PATCH; per run: the \
             SHP-2795 listing and one SHP-2284 ingestion for all",
        ),
        _ => return None,
    })
}

pub const HEADERS: [&str; 7] = [
    "flow",
    "delivered",
    "PING calls per referral",
    "Primero calls per referral",
    "bridge: API calls per referral (logins)",
    "original jobs: per referral + per run ÷ n",
    "original jobs' calls",
];

/// A row of the calls table for a run that delivered `delivered`.
pub fn row(flow: &str, delivered: u64, calls: &CallCount) -> Vec<String> {
    let n = delivered.max(1) as f64;
    let ours = (calls.ping_api() + calls.primero_api()) as f64 / n;
    let logins = calls.ping.get(PING_TOKEN).copied().unwrap_or(0)
        + calls.primero.get(PRIMERO_LOGIN).copied().unwrap_or(0);
    let (theirs, how) = match original(flow) {
        Some((per, fixed, how)) => (num(per + fixed / n, 2), how),
        None => ("?".into(), ""),
    };
    vec![
        flow.into(),
        delivered.to_string(),
        CallCount::listed(&calls.ping, PING_TOKEN, n),
        CallCount::listed(&calls.primero, PRIMERO_LOGIN, n),
        format!("**{}** ({logins})", num(ours, 2)),
        theirs,
        how.into(),
    ]
}

/// Whether the bridge makes no more calls per referral than the original.
pub fn never_more(flow: &str, delivered: u64, calls: &CallCount) -> Option<bool> {
    let n = delivered.max(1) as f64;
    let (per, fixed, _) = original(flow)?;
    let ours = (calls.ping_api() + calls.primero_api()) as f64 / n;
    Some(ours <= per + fixed / n + 1e-9)
}

/// Workflow 1.2's input: a caseworker accepts the service workflow 1.1
/// wrote on each case, having recorded the child's consent (as `bridge
/// demo` does).
pub fn accept_every_service(sims: &Simulators) -> anyhow::Result<usize> {
    let primero = sims.primero_sim();
    let mut accepted = 0;
    for case in primero.cases() {
        let (Some(id), Some(service)) = (
            case["id"].as_str(),
            case["services_section"][0]["unique_id"].as_str(),
        ) else {
            continue;
        };
        let patch: Map<String, Value> = json!({
            "consent_for_services": true,
            "disclosure_other_orgs": true,
            "services_section": [{"unique_id": service, "unhcr_referral_status": "accepted"}],
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        primero
            .update_case(id, patch)
            .map_err(|e| anyhow::anyhow!("accepting a service: {e:?}"))?;
        accepted += 1;
    }
    Ok(accepted)
}

/// Workflow 2.2's input: proGres accepts every interoperability referral
/// workflow 2.1 sent (125080001, in 2.2's set of decisions).
pub fn decide_every_referral(sims: &Simulators) -> usize {
    let ping = sims.ping_sim();
    let referrals = ping.interop_referrals();
    for r in &referrals {
        ping.decide_interop_referral(&r.id, 125_080_001, None, None);
    }
    referrals.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_run_and_logins_apart() {
        let before = CallCount {
            ping: [("retrieve SHP-2358".to_string(), 5)].into_iter().collect(),
            primero: BTreeMap::new(),
        };
        let after = CallCount {
            ping: [
                ("retrieve SHP-2358".to_string(), 15),
                ("ingest SHP-2748".to_string(), 1),
                ("token".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            primero: [
                ("GET /api/v2/cases".to_string(), 10),
                ("POST /api/v2/cases".to_string(), 10),
                (PRIMERO_LOGIN.to_string(), 1),
            ]
            .into_iter()
            .collect(),
        };
        let run = after.since(&before);
        assert_eq!(run.ping_api(), 11);
        assert_eq!(run.primero_api(), 20);
        let cells = row("ping-1.1", 10, &run);
        assert_eq!(cells[4], "**3.10** (2)");
        // The original: 4 a referral and the listing.
        assert_eq!(cells[5], "4.10");
        assert_eq!(never_more("ping-1.1", 10, &run), Some(true));
        assert_eq!(never_more("unknown", 10, &run), None);
    }
}

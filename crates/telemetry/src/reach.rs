//! Whether each partner answers: the outcome of its last calls, kept per
//! partner system for `/readyz`. A partner whose last [`WINDOW`] calls all
//! failed to get an answer (no connection, timeout, TLS, 5xx) makes the
//! service not ready; a partner not called yet does not (a deployment that
//! runs a flow every 15 minutes is ready before its first run).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};

/// Calls looked at per partner.
pub const WINDOW: usize = 5;

#[derive(Default)]
struct Calls {
    answered: VecDeque<bool>,
    /// Why the last unanswered call failed (a class and an origin, no path).
    last_failure: Option<String>,
}

fn calls() -> &'static Mutex<BTreeMap<String, Calls>> {
    static CALLS: OnceLock<Mutex<BTreeMap<String, Calls>>> = OnceLock::new();
    CALLS.get_or_init(Default::default)
}

/// One call to `system` ended: `answered` when the partner gave an answer
/// that is not a server error. `failure`: why not, when it did not.
pub fn call_ended(system: &str, answered: bool, failure: Option<String>) {
    let mut all = calls().lock().unwrap_or_else(|p| p.into_inner());
    let entry = all.entry(system.to_string()).or_default();
    entry.answered.push_back(answered);
    while entry.answered.len() > WINDOW {
        entry.answered.pop_front();
    }
    if !answered {
        entry.last_failure = failure;
    }
}

/// Why a partner makes the service not ready, if one does.
pub fn unreachable() -> Option<String> {
    let all = calls().lock().unwrap_or_else(|p| p.into_inner());
    let down: Vec<String> = all
        .iter()
        .filter(|(_, c)| c.answered.len() == WINDOW && c.answered.iter().all(|a| !a))
        .map(|(system, c)| match &c.last_failure {
            Some(why) => {
                format!("partner {system} unreachable: its last {WINDOW} calls failed ({why})")
            }
            None => format!("partner {system} unreachable: its last {WINDOW} calls failed"),
        })
        .collect();
    (!down.is_empty()).then(|| down.join("; "))
}

/// Forget every partner's calls (tests).
pub fn reset() {
    calls().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_is_unreachable_only_when_its_whole_window_failed() {
        reset();
        assert_eq!(unreachable(), None, "never called: ready");
        for _ in 0..WINDOW - 1 {
            call_ended(
                "t-ping",
                false,
                Some("connection refused at http://127.0.0.1:9".into()),
            );
        }
        assert_eq!(unreachable(), None, "fewer than {WINDOW} calls");
        call_ended(
            "t-ping",
            false,
            Some("connection refused at http://127.0.0.1:9".into()),
        );
        let why = unreachable().unwrap();
        assert!(
            why.contains("t-ping") && why.contains("connection refused"),
            "{why}"
        );
        call_ended("t-ping", true, None);
        assert_eq!(unreachable(), None, "one answer in the window: reachable");
    }
}

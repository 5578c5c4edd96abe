//! One run of a flow at a time, whoever starts it: the scheduler's ticks and
//! an operator's replay or cursor move from the console share one gate per
//! flow, so a replay never runs beside a scheduled run of the same flow and a
//! cursor is never moved under a run that is about to commit its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A flow's gate: held for the length of a run (or a cursor move).
pub type Gate = Arc<tokio::sync::Mutex<()>>;

/// The gates of every flow of one process.
#[derive(Debug, Default, Clone)]
pub struct RunGates {
    gates: Arc<Mutex<HashMap<String, Gate>>>,
}

impl RunGates {
    /// The gate of `flow` (the same one for every caller).
    pub fn gate(&self, flow: &str) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(flow.to_string()).or_default().clone()
    }

    /// Hold `flow`'s gate when no run of it is going; `None` when one is.
    pub fn try_hold(&self, flow: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.gate(flow).try_lock_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_flow_and_flows_apart() {
        let gates = RunGates::default();
        let held = gates.try_hold("ping-1.1").expect("free");
        assert!(gates.clone().try_hold("ping-1.1").is_none());
        assert!(gates.try_hold("ping-2.1").is_some());
        drop(held);
        assert!(gates.try_hold("ping-1.1").is_some());
    }
}

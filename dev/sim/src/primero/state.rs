//! The simulator's shared state and its handle, [`PrimeroSim`]: the clock,
//! the case store and its index, the state operations the other parts share.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::{json, Map, Value};

use super::auth::{IssuedToken, Session};
use super::config::PrimeroSimConfig;
use super::faults::{Fault, FaultRule, InFlight, WriteHook};
use super::flags::SimFlag;
use super::merge::{recompute_associated, str_field};
use super::query::CaseFilter;
use super::records::{SimReferral, SimUser};
use super::role::{self};
use super::wire::SimError;

/// Timestamps for `created_at` / `last_updated_at`: whole seconds, as
/// Primero v2.11+ compares and sorts them, so several writes share a second
/// (and a listing orders them arbitrarily). Never goes backwards. Tests may
/// pin it to one second ([`PrimeroSim::pin_clock`]).
#[derive(Default)]
pub(super) struct Clock {
    last: Option<DateTime<Utc>>,
    pub(super) pinned: Option<DateTime<Utc>>,
}

impl Clock {
    fn tick(&mut self) -> DateTime<Utc> {
        let now = self.pinned.unwrap_or_else(Utc::now).trunc_subsecs(0);
        let next = self.last.map_or(now, |last| last.max(now));
        self.last = Some(next);
        next
    }

    pub(super) fn tick_string(&mut self) -> String {
        format_ts(self.tick())
    }
}

pub(super) fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) struct SimState {
    pub(super) config: PrimeroSimConfig,
    /// Creation order; `case_index` maps record id → position.
    pub(super) cases: Vec<Map<String, Value>>,
    pub(super) case_index: HashMap<String, usize>,
    /// `unhcr_individual_no` → positions of the cases that carry (or once
    /// carried) it, so a search by individual does not scan every case. A
    /// hint: the filter still checks each candidate. Cases handed out by
    /// `case_mut` are re-read into it before the next search (`individual_dirty`).
    individual_index: HashMap<String, Vec<usize>>,
    individual_dirty: Vec<usize>,
    /// Referrals by case record id.
    pub(super) referrals: HashMap<String, Vec<SimReferral>>,
    pub(super) users: Vec<SimUser>,
    pub(super) tokens: HashMap<String, IssuedToken>,
    /// v2.11 sessions by cookie value.
    pub(super) sessions: HashMap<String, Session>,
    pub(super) clock: Clock,
    pub(super) requests: BTreeMap<String, u64>,
    /// Requests being handled now and the most ever at once, by endpoint
    /// (the keys of `requests`).
    pub(super) in_flight_by: BTreeMap<String, (usize, usize)>,
    pub(super) arrivals: Vec<Instant>,
    pub(super) faults: Vec<FaultRule>,
    pub(super) latency: Duration,
    pub(super) write_hook: Option<WriteHook>,
    /// Option lists of the select fields checked on HTTP writes.
    pub(super) lookups: BTreeMap<String, Vec<String>>,
    /// Flags of all cases, in creation order (ids are their position + 1).
    pub(super) flags: Vec<SimFlag>,
    /// The write bodies received, as sent, when recording is on
    /// ([`PrimeroSim::record_writes`]).
    pub(super) writes: Option<Vec<super::knobs::ReceivedWrite>>,
}

/// The simulator: a cheap-to-clone handle on shared state. The HTTP API
/// ([`router`](Self::router), [`start`](Self::start)) and the driving methods
/// (the sibling modules: cases, referrals, users, faults) see the same data.
#[derive(Clone)]
pub struct PrimeroSim {
    state: Arc<Mutex<SimState>>,
    pub(super) in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for PrimeroSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimeroSim").finish_non_exhaustive()
    }
}

impl Default for PrimeroSim {
    fn default() -> Self {
        Self::new(PrimeroSimConfig::default())
    }
}

impl PrimeroSim {
    pub fn new(config: PrimeroSimConfig) -> Self {
        let mut clock = Clock::default();
        let now = clock.tick_string();
        let mut api_user = SimUser::new(config.user_name.clone());
        api_user.id = 1;
        api_user.full_name = "Bridge API user".to_string();
        api_user.position = Some("Interoperability service account".to_string());
        api_user.created_at = now.clone();
        api_user.updated_at = now;
        Self {
            state: Arc::new(Mutex::new(SimState {
                config,
                cases: Vec::new(),
                case_index: HashMap::new(),
                individual_index: HashMap::new(),
                individual_dirty: Vec::new(),
                referrals: HashMap::new(),
                users: vec![api_user],
                tokens: HashMap::new(),
                sessions: HashMap::new(),
                clock,
                requests: BTreeMap::new(),
                in_flight_by: BTreeMap::new(),
                arrivals: Vec::new(),
                faults: Vec::new(),
                latency: Duration::ZERO,
                write_hook: None,
                lookups: role::default_lookups(),
                flags: Vec::new(),
                writes: None,
            })),
            in_flight: Arc::new(InFlight::default()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not take every later call down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configured API user name.
    pub fn api_user(&self) -> String {
        self.lock().config.user_name.clone()
    }
}

// State operations (shared by HTTP handlers and driving methods).
impl SimState {
    pub(super) fn case(&self, id: &str) -> Option<&Map<String, Value>> {
        self.case_index.get(id).map(|&i| &self.cases[i])
    }

    pub(super) fn case_mut(&mut self, id: &str) -> Option<&mut Map<String, Value>> {
        match self.case_index.get(id) {
            Some(&i) => {
                // The caller may change `unhcr_individual_no`.
                self.individual_dirty.push(i);
                Some(&mut self.cases[i])
            }
            None => None,
        }
    }

    /// Record the current `unhcr_individual_no` of the case at `position`.
    pub(super) fn index_individual(&mut self, position: usize) {
        if let Some(no) = str_field(&self.cases[position], "unhcr_individual_no") {
            let positions = self.individual_index.entry(no.to_string()).or_default();
            if !positions.contains(&position) {
                positions.push(position);
            }
        }
    }

    /// Bring `individual_index` up to date with the cases edited since.
    fn refresh_individual_index(&mut self) {
        for position in std::mem::take(&mut self.individual_dirty) {
            self.index_individual(position);
        }
    }

    /// Positions of the cases a search may match: all, or only those the
    /// individual index names when the filter asks for individual numbers.
    pub(super) fn candidates(&mut self, filter: &CaseFilter) -> Vec<usize> {
        let Some(no) = &filter.individual_no else {
            return (0..self.cases.len()).collect();
        };
        self.refresh_individual_index();
        let mut positions: Vec<usize> = self
            .individual_index
            .get(no)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        positions.sort_unstable();
        positions.dedup();
        positions
    }

    pub(super) fn touch_case(
        &mut self,
        case_id: &str,
        now: &str,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) {
        if let Some(case) = self.case_mut(case_id) {
            edit(case);
            case.insert("last_updated_at".into(), json!(now));
            recompute_associated(case);
        }
    }

    /// A case as the API user's role is shown it.
    pub(super) fn shown(&self, mut case: Map<String, Value>) -> Value {
        self.config.role.redact(&mut case);
        Value::Object(case)
    }

    /// What Primero keeps of a write by the API user: refused (422) when a
    /// value does not fit the form, else without the fields its role may
    /// not write.
    pub(super) fn api_write(
        &self,
        mut data: Map<String, Value>,
    ) -> Result<Map<String, Value>, SimError> {
        let pointers = role::invalid_pointers(&data, &self.lookups);
        if !pointers.is_empty() {
            return Err(SimError::InvalidJson { pointers });
        }
        self.config.role.strip_unwritable(&mut data);
        Ok(data)
    }

    pub(super) fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let rule = self.faults.iter_mut().find(|r| r.matches(method, path))?;
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        self.faults.retain(|r| r.remaining > 0);
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_gives_whole_seconds_that_never_go_back() {
        let mut clock = Clock::default();
        let stamps: Vec<String> = (0..500).map(|_| clock.tick_string()).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        assert!(stamps.iter().all(|s| s.ends_with(".000Z")), "{stamps:?}");
        // 500 ticks take far less than a second: most share one.
        assert!(stamps.windows(2).any(|w| w[0] == w[1]));
        let pinned = DateTime::parse_from_rfc3339("2031-01-01T10:00:00.700Z")
            .unwrap()
            .with_timezone(&Utc);
        clock.pinned = Some(pinned);
        assert_eq!(clock.tick_string(), "2031-01-01T10:00:00.000Z");
        clock.pinned = Some(pinned - chrono::Duration::days(1));
        assert_eq!(clock.tick_string(), "2031-01-01T10:00:00.000Z");
    }
}

//! The scheduler: one task per scheduled flow, firing on its cron expression
//! (UTC). A flow never runs twice at once: a tick that comes while the
//! previous run is still going is skipped. A run missed while the process was
//! down runs once on start.
//!
//! The time decisions are pure functions over [`DateTime<Utc>`]; the loop
//! reads the time through a [`Clock`] so tests can run it on tokio's paused
//! clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike as _, Utc};
use cron::Schedule;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use bridge_store::Trigger;

/// The first fire time strictly after `after`.
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

/// The newest fire time at or before `now`.
pub fn previous_fire(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Fire times are whole seconds.
    let now = now.with_nanosecond(0).unwrap_or(now);
    if schedule.includes(now) {
        return Some(now);
    }
    schedule.after(&now).next_back()
}

/// Whether a scheduled run was missed: the flow never ran, or its newest
/// scheduled time up to `now` is after the start of its last run.
pub fn missed_run(
    schedule: &Schedule,
    now: DateTime<Utc>,
    last_started: Option<DateTime<Utc>>,
) -> bool {
    match (previous_fire(schedule, now), last_started) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(due), Some(last)) => due > last,
    }
}

/// Where the scheduler reads the time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The machine's clock.
    System,
    /// `base` at tokio instant `at`, moving with tokio's clock (which tests
    /// can pause and advance).
    Tokio {
        base: DateTime<Utc>,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock following tokio's time from now on.
    pub fn tokio() -> Self {
        Clock::Tokio {
            base: Utc::now(),
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { base, at } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
                *base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
            }
        }
    }
}

/// What the scheduler runs. [`bridge_flows::app::App`] implements it with
/// `run_recorded`; tests use fakes.
#[async_trait]
pub trait FlowRunner: Send + Sync + 'static {
    /// Run the flow once; outcomes are the runner's to log and keep. `due`:
    /// the schedule slot the run is for (replicas run each slot once).
    async fn run(&self, flow: &str, trigger: Trigger, due: Option<DateTime<Utc>>);
    /// When the flow's newest run started (any trigger).
    async fn last_started(&self, flow: &str) -> Option<DateTime<Utc>>;
    /// The flow's one-run-at-a-time gate, when others (the console) share
    /// it; by default the scheduler's own.
    fn gate(&self, _flow: &str) -> bridge_flows::gates::Gate {
        Default::default()
    }
}

/// One flow's "one run at a time" gate.
#[derive(Debug, Default, Clone)]
pub struct FlowGate {
    busy: Arc<Mutex<()>>,
}

impl FlowGate {
    /// A gate shared with whoever else holds `busy`.
    pub fn shared(busy: bridge_flows::gates::Gate) -> Self {
        Self { busy }
    }

    /// Start a run in `tracker` unless one is going; false when skipped.
    pub fn fire<R: FlowRunner + ?Sized>(
        &self,
        tracker: &TaskTracker,
        runner: Arc<R>,
        flow: &str,
        trigger: Trigger,
        due: Option<DateTime<Utc>>,
    ) -> bool {
        let Ok(guard) = self.busy.clone().try_lock_owned() else {
            tracing::info!(
                flow,
                trigger = trigger.as_str(),
                "previous run still going; this tick is skipped"
            );
            return false;
        };
        let flow = flow.to_string();
        tracker.spawn(async move {
            runner.run(&flow, trigger, due).await;
            drop(guard);
        });
        true
    }
}

/// A scheduled flow.
#[derive(Debug, Clone)]
pub struct Entry {
    pub flow: String,
    pub schedule: Schedule,
}

/// The running scheduler.
pub struct Scheduler {
    stop: CancellationToken,
    loops: TaskTracker,
    runs: TaskTracker,
}

impl Scheduler {
    /// Check for missed runs (run them once now, `Trigger::Startup`), then
    /// start one loop per entry.
    pub async fn start<R: FlowRunner + ?Sized>(
        entries: Vec<Entry>,
        runner: Arc<R>,
        clock: Clock,
    ) -> Self {
        let stop = CancellationToken::new();
        let loops = TaskTracker::new();
        let runs = TaskTracker::new();
        for entry in entries {
            let gate = FlowGate::shared(runner.gate(&entry.flow));
            let last = runner.last_started(&entry.flow).await;
            let now = clock.now();
            if missed_run(&entry.schedule, now, last) {
                tracing::info!(flow = %entry.flow, "a scheduled run was missed; running it now");
                let due = previous_fire(&entry.schedule, now);
                gate.fire(&runs, runner.clone(), &entry.flow, Trigger::Startup, due);
            }
            loops.spawn(flow_loop(
                entry,
                gate,
                runner.clone(),
                clock,
                runs.clone(),
                stop.clone(),
            ));
        }
        loops.close();
        Self { stop, loops, runs }
    }

    /// Start no more runs; wait for the loops to end and for the runs in
    /// flight to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.loops.wait().await;
        self.runs.close();
        self.runs.wait().await;
    }

    /// Runs in flight.
    pub fn running(&self) -> usize {
        self.runs.len()
    }
}

async fn flow_loop<R: FlowRunner + ?Sized>(
    entry: Entry,
    gate: FlowGate,
    runner: Arc<R>,
    clock: Clock,
    runs: TaskTracker,
    stop: CancellationToken,
) {
    let mut after = clock.now();
    loop {
        let Some(next) = next_fire(&entry.schedule, after) else {
            tracing::info!(flow = %entry.flow, "the schedule has no more fire times");
            return;
        };
        let wait = (next - clock.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // Late (a busy machine, a suspended VM): fire once, not once per
        // missed tick.
        after = clock.now().max(next);
        gate.fire(
            &runs,
            runner.clone(),
            &entry.flow,
            Trigger::Schedule,
            Some(next),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every_five_minutes() -> Schedule {
        Schedule::from_str("0 */5 * * * *").unwrap()
    }

    #[test]
    fn next_fire_is_strictly_after() {
        let s = every_five_minutes();
        assert_eq!(
            next_fire(&s, utc("2025-06-01T10:02:13Z")),
            Some(utc("2025-06-01T10:05:00Z"))
        );
        assert_eq!(
            next_fire(&s, utc("2025-06-01T10:05:00Z")),
            Some(utc("2025-06-01T10:10:00Z"))
        );
        assert_eq!(
            next_fire(&s, utc("2025-06-01T23:59:59Z")),
            Some(utc("2025-06-02T00:00:00Z"))
        );
    }

    #[test]
    fn previous_fire_includes_now() {
        let s = every_five_minutes();
        assert_eq!(
            previous_fire(&s, utc("2025-06-01T10:07:00Z")),
            Some(utc("2025-06-01T10:05:00Z"))
        );
        assert_eq!(
            previous_fire(&s, utc("2025-06-01T10:05:00Z")),
            Some(utc("2025-06-01T10:05:00Z"))
        );
    }

    #[test]
    fn missed_run_decision() {
        let s = every_five_minutes();
        let now = utc("2025-06-01T10:07:00Z");
        // Never ran: run now.
        assert!(missed_run(&s, now, None));
        // Ran after the 10:05 fire time: nothing missed.
        assert!(!missed_run(&s, now, Some(utc("2025-06-01T10:05:00.200Z"))));
        assert!(!missed_run(&s, now, Some(utc("2025-06-01T10:05:00Z"))));
        // Last run before 10:05 (down across it): missed.
        assert!(missed_run(&s, now, Some(utc("2025-06-01T10:04:59Z"))));
        assert!(missed_run(&s, now, Some(utc("2025-05-30T00:00:00Z"))));
        // A schedule that only fired in the past (a fixed year) still counts.
        let once = Schedule::from_str("0 0 0 1 1 * 2020").unwrap();
        assert!(missed_run(&once, now, Some(utc("2019-12-31T00:00:00Z"))));
        assert!(!missed_run(&once, now, Some(utc("2020-01-01T00:00:01Z"))));
        // Nothing scheduled before now: nothing missed.
        let future = Schedule::from_str("0 0 0 1 1 * 2099").unwrap();
        assert!(!missed_run(&future, now, None));
    }

    /// Counts runs and the most at once; each run takes `takes`.
    struct SlowRunner {
        takes: Duration,
        now: AtomicUsize,
        max: AtomicUsize,
        finished: AtomicUsize,
        runs: std::sync::Mutex<Vec<(String, Trigger)>>,
        last: Option<DateTime<Utc>>,
    }

    impl SlowRunner {
        fn new(takes: Duration, last: Option<DateTime<Utc>>) -> Arc<Self> {
            Arc::new(Self {
                takes,
                now: AtomicUsize::new(0),
                max: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
                runs: Default::default(),
                last,
            })
        }

        fn runs(&self) -> Vec<(String, Trigger)> {
            self.runs.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl FlowRunner for SlowRunner {
        async fn run(&self, flow: &str, trigger: Trigger, _due: Option<DateTime<Utc>>) {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            self.runs.lock().unwrap().push((flow.to_string(), trigger));
            tokio::time::sleep(self.takes).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.finished.fetch_add(1, Ordering::SeqCst);
        }

        async fn last_started(&self, _flow: &str) -> Option<DateTime<Utc>> {
            self.last
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gate_never_runs_one_flow_twice_at_once() {
        let runner = SlowRunner::new(Duration::from_secs(10), None);
        let gate = FlowGate::default();
        let tracker = TaskTracker::new();
        let mut started = 0;
        for _ in 0..50 {
            if gate.fire(
                &tracker,
                runner.clone(),
                "ping-1.1",
                Trigger::Schedule,
                None,
            ) {
                started += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracker.close();
        tracker.wait().await;
        assert_eq!(runner.max.load(Ordering::SeqCst), 1);
        assert!(started >= 2, "the gate opens again after a run: {started}");
        assert!(started < 50, "ticks during a run are skipped: {started}");
        assert_eq!(runner.runs().len(), started);
    }

    #[tokio::test(start_paused = true)]
    async fn scheduler_fast_ticks_slow_runs_one_at_a_time_and_drains_on_shutdown() {
        // Fires every second; a run takes 3.5 s. The last run is "in the
        // future" so no startup run muddles the counts.
        let later = Some(Utc::now() + chrono::Duration::hours(1));
        let runner = SlowRunner::new(Duration::from_millis(3500), later);
        let entries = vec![
            Entry {
                flow: "ping-1.1".into(),
                schedule: Schedule::from_str("* * * * * *").unwrap(),
            },
            Entry {
                flow: "ping-2.1".into(),
                schedule: Schedule::from_str("* * * * * *").unwrap(),
            },
        ];
        let scheduler = Scheduler::start(entries, runner.clone(), Clock::tokio()).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        // Stop while a run is going.
        while runner.now.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(scheduler.running() >= 1);
        scheduler.shutdown().await;
        // Both flows ran, and the runs in flight finished before shutdown returned.
        assert_eq!(runner.now.load(Ordering::SeqCst), 0);
        assert_eq!(
            runner.finished.load(Ordering::SeqCst),
            runner.runs().len(),
            "every run started was finished"
        );
        let runs = runner.runs();
        for flow in ["ping-1.1", "ping-2.1"] {
            let n = runs.iter().filter(|(f, _)| f == flow).count();
            assert!((2..=6).contains(&n), "{flow}: {n} runs in 20 s");
        }
        // Two flows may run side by side; one flow never twice at once.
        assert!(runner.max.load(Ordering::SeqCst) <= 2);
        assert!(runs.iter().all(|(_, t)| *t == Trigger::Schedule));
        let after = runs.len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runner.runs().len(), after, "no runs after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn per_flow_concurrency_is_one_with_a_single_flow() {
        let later = Some(Utc::now() + chrono::Duration::hours(1));
        let runner = SlowRunner::new(Duration::from_millis(2500), later);
        let entries = vec![Entry {
            flow: "ping-1.2".into(),
            schedule: Schedule::from_str("* * * * * *").unwrap(),
        }];
        let scheduler = Scheduler::start(entries, runner.clone(), Clock::tokio()).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        scheduler.shutdown().await;
        assert_eq!(runner.max.load(Ordering::SeqCst), 1);
        assert!(runner.runs().len() >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_run_runs_once_on_start() {
        // Hourly; the last run was two hours ago: one startup run, then
        // nothing until the next hour.
        let last = Utc::now() - chrono::Duration::hours(2);
        let runner = SlowRunner::new(Duration::from_millis(10), Some(last));
        let entries = vec![Entry {
            flow: "ping-2.1".into(),
            schedule: Schedule::from_str("0 0 * * * *").unwrap(),
        }];
        let scheduler = Scheduler::start(entries.clone(), runner.clone(), Clock::tokio()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        scheduler.shutdown().await;
        assert_eq!(
            runner.runs(),
            vec![("ping-2.1".to_string(), Trigger::Startup)]
        );

        // Ran a moment ago: nothing missed, nothing runs on start.
        let runner = SlowRunner::new(Duration::from_millis(10), Some(Utc::now()));
        let scheduler = Scheduler::start(entries, runner.clone(), Clock::tokio()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        scheduler.shutdown().await;
        assert!(runner.runs().is_empty(), "{:?}", runner.runs());
    }
}

//! The latency a simulator injects, kept to what was configured.
//!
//! tokio's timer has millisecond ticks: on the bench's 2-core machine a
//! `tokio::time::sleep(20 ms)` returned after 22.1 ms on average, so every
//! simulated partner was a tenth slower than configured and the bench's
//! latency bound (which assumes the configured latency) was out of reach by
//! construction. The coarse part still waits on tokio's timer; the last few
//! milliseconds are left to one timer thread of the process, which sleeps
//! to the earliest deadline with a 1 µs timer slack and answers every wait
//! due. Measured in the bench's WF 1.1 run (up to 64 calls waiting at
//! once): 0.48 ms late on average with a blocking-pool sleep per call, 0.39
//! ms with this thread; the rest is waking the request's task on a busy
//! 2-core machine.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What is left to the precise sleep: more than tokio's overshoot.
const FINE: Duration = Duration::from_millis(3);

/// Wait `latency` from now, within tens of microseconds.
pub async fn wait(latency: Duration) {
    if latency.is_zero() {
        return;
    }
    let deadline = Instant::now() + latency;
    if latency > FINE {
        tokio::time::sleep(latency - FINE).await;
    }
    if Instant::now() >= deadline {
        return;
    }
    let (done, wake) = oneshot::channel();
    if timer().send((deadline, done)).is_ok() {
        // A lost timer thread only ends the wait early.
        let _ = wake.await;
    }
}

/// One wait: when, and whom to wake.
type Due = (Instant, oneshot::Sender<()>);

/// The process's timer thread, started on first use.
fn timer() -> &'static mpsc::Sender<Due> {
    static TIMER: OnceLock<mpsc::Sender<Due>> = OnceLock::new();
    TIMER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sim-latency".into())
            .spawn(move || run(&rx))
            .expect("the simulator's timer thread starts");
        tx
    })
}

fn run(rx: &mpsc::Receiver<Due>) {
    // Linux wakes a sleeping thread up to its timer slack (50 µs by
    // default) late, to batch wake-ups; this thread's wake-ups are the
    // simulated latency itself.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    // By deadline, then arrival (two waits may share a deadline).
    let mut waiting: BTreeMap<(Instant, u64), oneshot::Sender<()>> = BTreeMap::new();
    let mut arrivals = 0u64;
    loop {
        let now = Instant::now();
        while let Some(entry) = waiting.first_entry().filter(|e| e.key().0 <= now) {
            let _ = entry.remove().send(());
        }
        let next = match waiting.first_key_value() {
            Some(((deadline, _), _)) => rx.recv_timeout(deadline.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((deadline, done)) => {
                arrivals += 1;
                waiting.insert((deadline, arrivals), done);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never early; the timing itself is not asserted beyond that (a busy
    /// machine may be late), the bench reports it.
    #[tokio::test]
    async fn never_returns_before_the_latency() {
        for ms in [1, 5, 20] {
            let latency = Duration::from_millis(ms);
            let t0 = Instant::now();
            wait(latency).await;
            assert!(t0.elapsed() >= latency, "{ms} ms");
        }
    }

    /// Waits due in another order than they began end in deadline order,
    /// each no earlier than its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waits_at_once_each_keep_their_own_deadline() {
        let t0 = Instant::now();
        let waits = [9u64, 4, 6, 1, 4, 8].map(|ms| async move {
            let latency = Duration::from_millis(ms);
            let start = Instant::now();
            wait(latency).await;
            (latency, start.elapsed())
        });
        for (latency, took) in futures::future::join_all(waits).await {
            assert!(took >= latency, "{latency:?} ended after {took:?}");
        }
        assert!(t0.elapsed() >= Duration::from_millis(9));
    }
}

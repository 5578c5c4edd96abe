//! The latency a simulator injects, kept to what was configured.
//!
//! tokio's timer has millisecond ticks: on the bench's 2-core machine a
//! `tokio::time::sleep(20 ms)` returned after 22.1 ms on average, so every
//! simulated partner was a tenth slower than configured and the bench's
//! latency bound (which assumes the configured latency) was out of reach by
//! construction. The coarse part still waits on tokio's timer; the last few
//! milliseconds are slept on a blocking thread (`nanosleep`, tens of µs late).

use std::time::{Duration, Instant};

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
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        // A lost blocking thread (runtime shutting down) only ends the wait early.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
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
}

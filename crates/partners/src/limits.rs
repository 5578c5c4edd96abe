//! Per-partner limits: how many calls may be in flight at once and how fast
//! new calls may start. A 429 with `Retry-After` also pauses new calls to the
//! partner until it passes.
//!
//! A permit covers one HTTP exchange (request sent, answer read), not a token
//! login and not the wait between retries.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Limits of one partner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartnerLimits {
    /// Calls in flight at once (at least 1).
    pub max_in_flight: usize,
    /// Calls started per second at most; `None` for no limit.
    pub rate_per_sec: Option<f64>,
}

impl Default for PartnerLimits {
    /// 8 in flight, no rate limit.
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            rate_per_sec: None,
        }
    }
}

impl PartnerLimits {
    /// The smallest gap between two call starts, when rate limited.
    pub fn interval(&self) -> Option<Duration> {
        let rate = self.rate_per_sec.filter(|r| r.is_finite() && *r > 0.0)?;
        Duration::try_from_secs_f64(1.0 / rate).ok()
    }
}

/// The shared state enforcing [`PartnerLimits`]; one per client (clones of a
/// client share it).
#[derive(Debug)]
pub struct Limiter {
    limits: PartnerLimits,
    in_flight: Semaphore,
    interval: Option<Duration>,
    /// When the last call started (rate limit). Held while waiting for the
    /// next slot, so starts are spaced by at least `interval`.
    last_start: Mutex<Option<Instant>>,
    paused_until: StdMutex<Option<Instant>>,
}

/// Held for the duration of one HTTP exchange.
#[derive(Debug)]
pub struct CallPermit<'a> {
    _permit: SemaphorePermit<'a>,
}

impl Limiter {
    pub fn new(limits: PartnerLimits) -> Self {
        let permits = limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            limits,
            in_flight: Semaphore::new(permits),
            interval: limits.interval(),
            last_start: Mutex::new(None),
            paused_until: StdMutex::new(None),
        }
    }

    pub fn limits(&self) -> &PartnerLimits {
        &self.limits
    }

    /// Wait for a free slot, the end of any pause and the next rate slot.
    pub async fn acquire(&self) -> CallPermit<'_> {
        loop {
            self.wait_for_pause().await;
            let permit = self
                .in_flight
                .acquire()
                .await
                .expect("the limiter never closes its semaphore");
            // A pause that began while we queued applies to us too.
            if self.pause_deadline().is_some() {
                drop(permit);
                continue;
            }
            if let Some(interval) = self.interval {
                let mut last = self.last_start.lock().await;
                if let Some(previous) = *last {
                    tokio::time::sleep_until(previous + interval).await;
                }
                *last = Some(Instant::now());
            }
            return CallPermit { _permit: permit };
        }
    }

    /// Hold new calls back for `wait` (a partner's `Retry-After`).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn pause_deadline(&self) -> Option<Instant> {
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        match *paused {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                *paused = None;
                None
            }
        }
    }

    async fn wait_for_pause(&self) {
        while let Some(until) = self.pause_deadline() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Calls that could start now without waiting for a slot.
    pub fn available(&self) -> usize {
        self.in_flight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn defaults_and_interval() {
        let d = PartnerLimits::default();
        assert_eq!(d.max_in_flight, 8);
        assert_eq!(d.interval(), None);
        let r = PartnerLimits {
            max_in_flight: 1,
            rate_per_sec: Some(20.0),
        };
        assert_eq!(r.interval(), Some(Duration::from_millis(50)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let l = PartnerLimits {
                max_in_flight: 1,
                rate_per_sec: Some(bad),
            };
            assert_eq!(l.interval(), None, "{bad}");
        }
        // Zero in flight would deadlock; it means one.
        let l = Limiter::new(PartnerLimits {
            max_in_flight: 0,
            rate_per_sec: None,
        });
        assert_eq!(l.available(), 1);
    }

    #[tokio::test]
    async fn never_more_than_max_in_flight() {
        let limiter = Arc::new(Limiter::new(PartnerLimits {
            max_in_flight: 2,
            rate_per_sec: None,
        }));
        let now = Arc::new(AtomicUsize::new(0));
        let high = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (limiter, now, high) = (limiter.clone(), now.clone(), high.clone());
                tokio::spawn(async move {
                    let _permit = limiter.acquire().await;
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    high.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(high.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn rate_limit_spaces_starts_and_pause_holds_calls() {
        // Lower bounds only: a rate limiter never lets a call start early.
        let limiter = Limiter::new(PartnerLimits {
            max_in_flight: 8,
            rate_per_sec: Some(50.0),
        });
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            let _p = limiter.acquire().await;
            starts.push(Instant::now());
        }
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(20));
        }
        assert!(starts[4] - t0 >= Duration::from_millis(80));

        limiter.pause_for(Duration::from_millis(150));
        let before = Instant::now();
        let _p = limiter.acquire().await;
        assert!(Instant::now() - before >= Duration::from_millis(150));
    }
}

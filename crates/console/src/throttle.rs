//! The login rate limit: after `failures` failed logins within `window`, for
//! one account name or from one client address, logins are refused (without
//! checking the password) until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::LoginLimit;

pub struct LoginThrottle {
    limit: LoginLimit,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    pub fn new(limit: LoginLimit) -> Self {
        Self {
            limit,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(wait)` when any of `keys` has used up its failures.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = self.failures();
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = failures.get_mut(*key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.limit.window)
                {
                    times.pop_front();
                }
                if times.len() >= self.limit.failures as usize {
                    if let Some(oldest) = times.front() {
                        wait = wait.max(self.limit.window - now.duration_since(*oldest));
                    }
                }
            }
        }
        failures.retain(|_, t| !t.is_empty());
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    pub fn failed(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut failures = self.failures();
        for key in keys {
            failures.entry(key.to_string()).or_default().push_back(now);
        }
    }

    /// A successful login clears its account name's failures (not the
    /// address's: one good password does not open the door for guessing
    /// the others' from the same place).
    pub fn succeeded(&self, account: &str) {
        self.failures().remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_failures_and_forgets_after_the_window() {
        let t = LoginThrottle::new(LoginLimit {
            failures: 3,
            window: Duration::from_millis(200),
        });
        for _ in 0..3 {
            assert!(t.check(&["name:amina", "addr:127.0.0.1"]).is_ok());
            t.failed(&["name:amina", "addr:127.0.0.1"]);
        }
        let wait = t.check(&["name:amina"]).unwrap_err();
        assert!(wait <= Duration::from_millis(200));
        // Another name from the same address is refused too.
        assert!(t.check(&["name:other", "addr:127.0.0.1"]).is_err());
        assert!(t.check(&["name:other", "addr:10.0.0.2"]).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check(&["name:amina", "addr:127.0.0.1"]).is_ok());
        t.failed(&["name:amina"]);
        t.succeeded("name:amina");
        assert!(t.failures().get("name:amina").is_none());
    }
}

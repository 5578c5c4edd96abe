//! Retry of one partner call inside a run: exponential backoff with full
//! jitter, `Retry-After` honoured, bounded in attempts and in total time.
//!
//! What is safe to retry at the call level:
//! - any method when the request surely was not processed: the connection
//!   could not be made, or the partner answered 429 or 503;
//! - idempotent calls (GET, PUT, DELETE, PING retrieve and check status, token
//!   calls) on any transient error (timeout, reset, 5xx, 429);
//! - never a POST/PATCH that may have been processed (timeout or reset after
//!   the request was sent, 500, 502, 504): the error is returned and the
//!   flow's record-level logic decides (upserts search first, so the next
//!   attempt of the record is idempotent).

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

use super::limits::Limiter;
use super::ConnectorError;

/// How often and how long a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles per retry (full jitter below it).
    pub base_delay: Duration,
    /// Largest computed backoff (a `Retry-After` may ask for more).
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt began.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 200 ms base, 5 s max delay, 30 s budget.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            budget: Duration::ZERO,
        }
    }

    /// Upper bound of the backoff before retry number `retry` (1-based):
    /// `min(max_delay, base_delay * 2^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Full jitter: uniform in `[0, ceiling(retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Whether a call may be repeated when its outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Repeating it changes nothing (GET, PUT, DELETE, PING retrieve/check
    /// status, token calls).
    Idempotent,
    /// A POST/PATCH that may create or change something.
    NonIdempotent,
}

impl CallKind {
    /// GET, HEAD, PUT, DELETE, OPTIONS are idempotent; POST and PATCH are not.
    pub fn of_method(method: &reqwest::Method) -> Self {
        use reqwest::Method;
        if [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ]
        .contains(method)
        {
            CallKind::Idempotent
        } else {
            CallKind::NonIdempotent
        }
    }
}

/// The rules above, for one error.
pub fn may_retry(err: &ConnectorError, kind: CallKind) -> bool {
    match err {
        // Surely not processed.
        ConnectorError::Status {
            status: 429 | 503, ..
        } => true,
        ConnectorError::Transport {
            connect_failed: true,
            ..
        } => true,
        // Maybe processed: only when repeating is harmless.
        ConnectorError::Status { status, .. } => *status >= 500 && kind == CallKind::Idempotent,
        ConnectorError::Transport { .. } => kind == CallKind::Idempotent,
        ConnectorError::Protocol { .. }
        | ConnectorError::Auth { .. }
        | ConnectorError::ReadOnly { .. } => false,
    }
}

/// How one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Judged by [`may_retry`].
    Call(ConnectorError),
    /// Returned at once, e.g. a login failure that already had its own retries.
    Final(ConnectorError),
}

impl From<ConnectorError> for AttemptError {
    fn from(err: ConnectorError) -> Self {
        AttemptError::Call(err)
    }
}

/// For `/readyz`: did the partner answer this call? A transport failure or
/// a server error is no answer; any other status is one.
fn note_reach(system: &str, err: &ConnectorError) {
    let unanswered = match err {
        ConnectorError::Transport { reason, .. } => Some(reason.clone()),
        ConnectorError::Status { status, .. } if *status >= 500 => Some(format!("HTTP {status}")),
        _ => None,
    };
    let answered = unanswered.is_none();
    bridge_telemetry::reach::call_ended(system, answered, unanswered);
}

/// Run `attempt` until it succeeds, fails for good, or the policy is spent.
///
/// `system` is `primero` | `ping` | `dtp` (logs and metrics). When `limiter`
/// is given, a 429 with `Retry-After` also pauses new calls to the partner.
pub async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    system: &'static str,
    endpoint: &str,
    kind: CallKind,
    limiter: Option<&Limiter>,
    mut attempt: F,
) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let started = Instant::now();
    let mut number: u32 = 1;
    loop {
        let err = match attempt().await {
            Ok(value) => {
                bridge_telemetry::reach::call_ended(system, true, None);
                return Ok(value);
            }
            Err(AttemptError::Final(err)) => {
                note_reach(system, &err);
                return Err(err);
            }
            Err(AttemptError::Call(err)) => err,
        };
        note_reach(system, &err);
        let retry_after = match &err {
            ConnectorError::Status { retry_after, .. } => retry_after.map(Duration::from_secs),
            _ => None,
        };
        if let (Some(limiter), Some(wait), Some(429)) = (limiter, retry_after, err.status()) {
            // Never longer than a whole call may last.
            limiter.pause_for(wait.min(policy.budget.max(policy.max_delay)));
        }
        if number >= policy.max_attempts || !may_retry(&err, kind) {
            return Err(err);
        }
        let delay = retry_after.unwrap_or_else(|| policy.backoff(number));
        if started.elapsed().saturating_add(delay) > policy.budget {
            tracing::debug!(
                system,
                endpoint,
                attempt = number,
                "partner call not retried: retry budget spent"
            );
            return Err(err);
        }
        let status = err
            .status()
            .map_or_else(|| "transport".to_string(), |s| s.to_string());
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(
            system,
            endpoint,
            status = status.as_str(),
            attempt = number,
            delay_ms,
            "partner call failed; retrying"
        );
        bridge_telemetry::metrics().retry(system);
        tokio::time::sleep(delay).await;
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::System;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16, retry_after: Option<u64>) -> ConnectorError {
        ConnectorError::Status {
            system: System::Primero,
            endpoint: "GET /x".into(),
            status: code,
            reason: String::new(),
            retry_after,
        }
    }

    fn transport(connect_failed: bool, timed_out: bool) -> ConnectorError {
        ConnectorError::Transport {
            system: System::Primero,
            endpoint: "GET /x".into(),
            reason: String::new(),
            timed_out,
            connect_failed,
            cause: crate::TransportCause::Other,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            budget: Duration::from_secs(5),
        }
    }

    #[test]
    fn rules_by_error_and_call_kind() {
        use CallKind::*;
        for kind in [Idempotent, NonIdempotent] {
            assert!(may_retry(&status(429, None), kind));
            assert!(may_retry(&status(503, Some(1)), kind));
            assert!(may_retry(&transport(true, false), kind));
            assert!(!may_retry(&status(404, None), kind));
            assert!(!may_retry(&status(422, None), kind));
        }
        for code in [500, 502, 504] {
            assert!(may_retry(&status(code, None), Idempotent));
            assert!(!may_retry(&status(code, None), NonIdempotent), "{code}");
        }
        assert!(may_retry(&transport(false, true), Idempotent));
        assert!(!may_retry(&transport(false, true), NonIdempotent));
        assert!(!may_retry(&transport(false, false), NonIdempotent));
        let protocol = ConnectorError::Protocol {
            system: System::Ping,
            endpoint: "POST /x".into(),
            reason: String::new(),
        };
        assert!(!may_retry(&protocol, Idempotent));
        assert_eq!(CallKind::of_method(&reqwest::Method::GET), Idempotent);
        assert_eq!(CallKind::of_method(&reqwest::Method::PUT), Idempotent);
        assert_eq!(CallKind::of_method(&reqwest::Method::POST), NonIdempotent);
        assert_eq!(CallKind::of_method(&reqwest::Method::PATCH), NonIdempotent);
    }

    #[test]
    fn backoff_is_capped_exponential_with_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(5), Duration::from_millis(3200));
        assert_eq!(p.ceiling(6), Duration::from_secs(5));
        assert_eq!(p.ceiling(60), Duration::from_secs(5));
        for retry in 1..10 {
            assert!(p.backoff(retry) <= p.ceiling(retry));
        }
        assert_eq!(RetryPolicy::none().backoff(3), Duration::ZERO);
    }

    async fn count_until_ok<T>(
        policy: &RetryPolicy,
        kind: CallKind,
        mut answers: Vec<Result<T, ConnectorError>>,
    ) -> (Result<T, ConnectorError>, u32) {
        answers.reverse();
        let calls = AtomicU32::new(0);
        let answers = std::sync::Mutex::new(answers);
        let result = run(policy, "primero", "GET /x", kind, None, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = answers.lock().unwrap().pop().expect("an answer left");
            async move { next.map_err(AttemptError::from) }
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let (r, calls) = count_until_ok(
            &fast(),
            CallKind::Idempotent,
            vec![Err(status(503, None)), Err(status(502, None)), Ok(7)],
        )
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn stops_after_max_attempts_with_the_last_error() {
        let answers = (0..4).map(|_| Err(status(503, None))).collect();
        let (r, calls) = count_until_ok::<u8>(&fast(), CallKind::NonIdempotent, answers).await;
        assert_eq!(r.unwrap_err().status(), Some(503));
        assert_eq!(calls, 4);
    }

    #[tokio::test]
    async fn a_maybe_processed_post_is_not_retried() {
        let (r, calls) = count_until_ok::<u8>(
            &fast(),
            CallKind::NonIdempotent,
            vec![Err(status(500, None))],
        )
        .await;
        assert_eq!(r.unwrap_err().status(), Some(500));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn retry_after_beyond_the_budget_stops_at_once() {
        let (r, calls) = count_until_ok::<u8>(
            &fast(),
            CallKind::Idempotent,
            vec![Err(status(429, Some(60)))],
        )
        .await;
        assert_eq!(r.unwrap_err().status(), Some(429));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn final_errors_and_none_policy_are_not_retried() {
        let (r, calls) = count_until_ok::<u8>(
            &RetryPolicy::none(),
            CallKind::Idempotent,
            vec![Err(status(503, None))],
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let calls = AtomicU32::new(0);
        let r: Result<u8, _> = run(
            &fast(),
            "ping",
            "POST /t",
            CallKind::Idempotent,
            None,
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(AttemptError::Final(status(503, None))) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

//! The latency bound of an end-to-end run (issue 18 §4): the most records a
//! second a flow can deliver when every partner call takes the injected
//! latency `L` and nothing else costs anything. A measured rate is reported
//! as a share of it.
//!
//! Three things cap the rate:
//!
//! - **Records in flight.** A record waits for `k` partner calls one after
//!   another (each needs the answer of the one before), so it takes at
//!   least `k × L`; with `R` records worked on at once (`record_concurrency`)
//!   at most `R ÷ (k × L)` records finish a second.
//! - **Calls in flight, per partner.** Partner `p` has at most `M_p` calls
//!   in flight (`max_in_flight`), each taking `L`: at most `M_p ÷ L` calls a
//!   second. A record costs `c_p` calls to it (its own, plus its share of the
//!   run's listing pages and batched acknowledgements, as counted by the
//!   simulator; token calls are left out: they hold no call slot), so at
//!   most `M_p ÷ (c_p × L)` records a second.
//!
//! - **A partner's rate limit.** Partner `p` answers at most `r_p` calls a
//!   second (`rate_per_sec`), so at most `r_p ÷ c_p` records a second.
//!
//! The bound is the smallest of these:
//! `min(R ÷ (k × L), min_p M_p ÷ (c_p × L))`. With the benchmark's 32
//! records at once, 32 calls per partner and 20 ms, workflow 1.1 (`k` = 3:
//! SHP-2358 details, Primero search, Primero create or update; PING
//! `c` ≈ 1.001, Primero `c` = 2) is bound by its records in flight:
//! 32 ÷ (3 × 0.02 s) ≈ 533 records/s.

use std::time::Duration;

/// Partner calls a record of `flow` waits for one after another, when all
/// goes well: the `k` of the bound.
pub fn sequential_calls(flow: &str) -> Option<usize> {
    match flow {
        // SHP-2358 details → Primero search → create/update (the SHP-2748
        // acknowledgement goes later, a batch at a time).
        "ping-1.1" => Some(3),
        // Referrals of the case (Primero) → SHP-2731 ingestion → check status.
        "ping-2.1" => Some(3),
        _ => None,
    }
}

/// One partner's side of the bound.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerCalls {
    pub partner: &'static str,
    /// Calls in flight allowed (`max_in_flight`).
    pub max_in_flight: usize,
    /// Calls per record (token calls left out).
    pub calls_per_record: f64,
    /// Calls a second allowed (`rate_per_sec`), when limited.
    pub rate_per_sec: Option<f64>,
}

/// The bound and what sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub records_per_sec: f64,
    /// `records in flight` or a partner's name.
    pub limited_by: String,
}

/// `min(R ÷ (k × L), min_p M_p ÷ (c_p × L))`; `None` without latency or
/// without `k`.
pub fn latency_bound(
    concurrency: usize,
    sequential: usize,
    latency: Duration,
    partners: &[PartnerCalls],
) -> Option<Bound> {
    let l = latency.as_secs_f64();
    if l <= 0.0 || sequential == 0 {
        return None;
    }
    let mut best = Bound {
        records_per_sec: concurrency.max(1) as f64 / (sequential as f64 * l),
        limited_by: "records in flight".into(),
    };
    for p in partners.iter().filter(|p| p.calls_per_record > 0.0) {
        let rate = p.max_in_flight.max(1) as f64 / (p.calls_per_record * l);
        if rate < best.records_per_sec {
            best = Bound {
                records_per_sec: rate,
                limited_by: format!("{} calls in flight", p.partner),
            };
        }
        if let Some(limit) = p.rate_per_sec.filter(|r| *r > 0.0) {
            let rate = limit / p.calls_per_record;
            if rate < best.records_per_sec {
                best = Bound {
                    records_per_sec: rate,
                    limited_by: format!("{} rate limit", p.partner),
                };
            }
        }
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_1_1_at_32_and_20_ms_is_bound_by_its_records_in_flight() {
        let partners = [
            PartnerCalls {
                partner: "PING",
                max_in_flight: 32,
                calls_per_record: 1.01,
                rate_per_sec: None,
            },
            PartnerCalls {
                partner: "Primero",
                max_in_flight: 32,
                calls_per_record: 2.0,
                rate_per_sec: None,
            },
        ];
        let b = latency_bound(32, 3, Duration::from_millis(20), &partners).unwrap();
        assert!((b.records_per_sec - 533.33).abs() < 0.01, "{b:?}");
        assert_eq!(b.limited_by, "records in flight");
        // Twice the records at once: now Primero's 32 calls set it.
        let b = latency_bound(64, 3, Duration::from_millis(20), &partners).unwrap();
        assert!((b.records_per_sec - 800.0).abs() < 0.01, "{b:?}");
        assert_eq!(b.limited_by, "Primero calls in flight");
        assert!(latency_bound(32, 3, Duration::ZERO, &partners).is_none());
        // PING limited to 50 calls a second: 50 ÷ 1.01 records a second.
        let mut limited = partners.clone();
        limited[0].rate_per_sec = Some(50.0);
        let b = latency_bound(32, 3, Duration::from_millis(20), &limited).unwrap();
        assert!((b.records_per_sec - 49.50).abs() < 0.01, "{b:?}");
        assert_eq!(b.limited_by, "PING rate limit");
    }
}

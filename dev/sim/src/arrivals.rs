//! What a partner saw of its callers' pace: the simulators record when each
//! request arrived (`arrival_times`); rate-limit checks count them here.

use std::time::{Duration, Instant};

/// The most instants within any one-second window.
pub fn most_in_one_second(mut times: Vec<Instant>) -> usize {
    times.sort();
    let mut most = 0;
    let mut first = 0;
    for (i, t) in times.iter().enumerate() {
        while *t - times[first] >= Duration::from_secs(1) {
            first += 1;
        }
        most = most.max(i + 1 - first);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_busiest_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(most_in_one_second(Vec::new()), 0);
        // 0, 100, 900 fall in one second; 1000 starts the next with 100 and 900.
        let times = vec![at(1000), at(0), at(900), at(100), at(2500)];
        assert_eq!(most_in_one_second(times), 3);
    }
}

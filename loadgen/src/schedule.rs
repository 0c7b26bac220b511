//! Constant-rate send times.
//!
//! The total rate R is shared by C connections: message n of the whole run is
//! due at n / R seconds, and connection i sends messages i, i + C, i + 2C, …
//! so sends are spread evenly instead of arriving in bursts. Latency is
//! measured from these due times, not from when a message actually left: a
//! server that stalls delays the sends behind it, and that delay shows up in
//! the tail (coordinated omission, corrected as wrk2 does).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    connections: u64,
    index: u64,
}

impl Schedule {
    pub fn new(start: Instant, rate: f64, connections: u32, index: u32) -> Self {
        Schedule {
            start,
            rate,
            connections: connections as u64,
            index: index as u64,
        }
    }

    /// When this connection's `k`-th message is due.
    pub fn due(&self, k: u64) -> Instant {
        let n = self.index + k * self.connections;
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_interleave_at_the_total_rate() {
        let start = Instant::now();
        let schedules: Vec<Schedule> = (0..4).map(|i| Schedule::new(start, 1000.0, 4, i)).collect();
        let mut times: Vec<Duration> = schedules
            .iter()
            .flat_map(|s| (0..250).map(move |k| s.due(k) - start))
            .collect();
        times.sort();
        // 1000 messages over one second, one every millisecond, none twice.
        for (n, t) in times.iter().enumerate() {
            let expected = Duration::from_micros(n as u64 * 1000);
            let error = t.abs_diff(expected);
            assert!(error < Duration::from_micros(2), "message {n} at {t:?}");
        }
        assert_eq!(schedules[1].due(0) - start, Duration::from_millis(1));
        assert_eq!(schedules[1].due(1) - start, Duration::from_millis(5));
    }

    #[test]
    fn due_times_do_not_drift_over_long_runs() {
        let start = Instant::now();
        let s = Schedule::new(start, 3.0, 1, 0);
        // 3 per second: message 3 000 000 is due at exactly 1 000 000 s.
        assert_eq!(s.due(3_000_000) - start, Duration::from_secs(1_000_000));
    }
}

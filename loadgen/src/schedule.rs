//! Paced send times: constant rate, or stages that ramp it.
//!
//! The rate profile says how many messages per second the whole run sends
//! at each moment: one rate throughout (`--rate R`), or, with `--stages`, R
//! through the warm-up and then each stage ramping linearly from the rate
//! before it to its target. Message n of the whole run is due when the
//! profile's integral reaches n, and connection i of C sends messages i,
//! i + C, i + 2C, … so sends are spread evenly instead of arriving in
//! bursts. Latency is measured from these due times, not from when a
//! message actually left: a server that stalls delays the sends behind it,
//! and that delay shows up in the tail (coordinated omission, corrected as
//! wrk2 does).

use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::options::LoadConfig;

/// A stretch of the profile where the rate goes linearly from `from_rate`
/// to `to_rate` over `length` seconds.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    start: f64,
    length: f64,
    from_rate: f64,
    to_rate: f64,
    /// Messages due before this segment starts.
    before: f64,
}

/// Messages per second over the run, as pieces of straight lines; the last
/// rate holds for ever after.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    segments: Vec<Segment>,
}

impl Profile {
    pub fn constant(rate: f64) -> Profile {
        Profile::ramps(rate, &[])
    }

    /// From `start_rate`, each (seconds, target) in turn.
    pub fn ramps(start_rate: f64, stages: &[(f64, f64)]) -> Profile {
        let mut segments: Vec<Segment> = Vec::new();
        let (mut t, mut rate, mut before) = (0.0, start_rate, 0.0);
        for &(length, target) in stages {
            segments.push(Segment {
                start: t,
                length,
                from_rate: rate,
                to_rate: target,
                before,
            });
            before += (rate + target) / 2.0 * length;
            t += length;
            rate = target;
        }
        segments.push(Segment {
            start: t,
            length: f64::INFINITY,
            from_rate: rate,
            to_rate: rate,
            before,
        });
        Profile { segments }
    }

    /// The run's profile: `--rate` (0 if not given) through the warm-up,
    /// then the stages; or `--rate` throughout.
    pub fn of(load: &LoadConfig) -> Profile {
        let rate = load.rate.unwrap_or(0.0);
        if load.stages.is_empty() {
            return Profile::constant(rate);
        }
        let mut pieces = vec![(load.warmup, rate)];
        pieces.extend(load.stages.iter().map(|s| (s.secs, s.target)));
        Profile::ramps(rate, &pieces)
    }

    /// How many connections send over the run with --connection-stages:
    /// the count a first `0s:N` jumps to (else 0) through the warm-up, then
    /// the stages. None without them.
    pub fn connections_of(load: &LoadConfig) -> Option<Profile> {
        let first = load.connection_stages.first()?;
        let start = if first.secs == 0.0 {
            first.connections as f64
        } else {
            0.0
        };
        let mut pieces = vec![(load.warmup, start)];
        pieces.extend(
            load.connection_stages
                .iter()
                .map(|s| (s.secs, s.connections as f64)),
        );
        Some(Profile::ramps(start, &pieces))
    }

    /// Connections sending at `t` seconds from the start, by a connection
    /// profile: those whose ids are below it.
    pub fn sending_at(&self, t: f64) -> u32 {
        // A hair over, so that a count reached exactly is not lost to
        // rounding on the way.
        (self.rate_at(t) + 1e-9).floor() as u32
    }

    /// Seconds from the start at which message `n` (counting from 0) is
    /// due; None if the rate has fallen to 0 for good before it.
    pub fn time_of(&self, n: f64) -> Option<f64> {
        let segment = self.segments.iter().find(|s| {
            let count = (s.from_rate + s.to_rate) / 2.0 * s.length;
            // A segment at rate 0 sends nothing; NaN for 0 × ∞ too.
            n < s.before + count && count > 0.0
        })?;
        let m = n - segment.before;
        let slope = (segment.to_rate - segment.from_rate) / segment.length;
        // m = r0 τ + slope τ² / 2, solved for τ in the form that stays
        // exact when the slope is 0 and stable when r0 is.
        let tau = if m <= 0.0 {
            0.0
        } else if slope == 0.0 {
            m / segment.from_rate
        } else {
            let r0 = segment.from_rate;
            2.0 * m / (r0 + (r0 * r0 + 2.0 * slope * m).max(0.0).sqrt())
        };
        Some(segment.start + tau)
    }

    /// The rate at `t` seconds from the start.
    pub fn rate_at(&self, t: f64) -> f64 {
        let s = self
            .segments
            .iter()
            .rev()
            .find(|s| s.start <= t)
            .unwrap_or(&self.segments[0]);
        if s.length.is_infinite() {
            return s.from_rate;
        }
        s.from_rate + (s.to_rate - s.from_rate) * ((t - s.start) / s.length).clamp(0.0, 1.0)
    }
}

/// One connection's due times.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    profile: Rc<Profile>,
    connections: u64,
    index: u64,
}

/// Far enough never to come: a due time after the rate fell to 0.
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Schedule {
    pub fn new(start: Instant, profile: Rc<Profile>, connections: u32, index: u32) -> Self {
        Schedule {
            start,
            profile,
            connections: connections as u64,
            index: index as u64,
        }
    }

    /// When this connection's `k`-th message is due.
    pub fn due(&self, k: u64) -> Instant {
        let n = self.index + k * self.connections;
        match self.profile.time_of(n as f64) {
            Some(secs) => self.start + Duration::from_secs_f64(secs),
            None => self.start + NEVER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(rate: f64, connections: u32, index: u32, start: Instant) -> Schedule {
        Schedule::new(start, Rc::new(Profile::constant(rate)), connections, index)
    }

    #[test]
    fn connections_interleave_at_the_total_rate() {
        let start = Instant::now();
        let schedules: Vec<Schedule> = (0..4).map(|i| constant(1000.0, 4, i, start)).collect();
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
        let s = constant(3.0, 1, 0, start);
        // 3 per second: message 3 000 000 is due at exactly 1 000 000 s.
        assert_eq!(s.due(3_000_000) - start, Duration::from_secs(1_000_000));
    }

    #[test]
    fn stages_ramp_the_rate_and_send_what_its_integral_says() {
        // 1 s at 1000/s, a ramp to 3000/s over 2 s, 1 s down to 0, then nothing.
        let p = Profile::ramps(1000.0, &[(1.0, 1000.0), (2.0, 3000.0), (1.0, 0.0)]);
        assert_eq!(p.rate_at(0.5), 1000.0);
        assert_eq!(p.rate_at(2.0), 2000.0);
        assert_eq!(p.rate_at(3.0), 3000.0);
        assert_eq!(p.rate_at(3.5), 1500.0);
        assert_eq!(p.rate_at(9.0), 0.0);
        // 1000 in the first second, 4000 over the ramp, 1500 on the way down.
        let at = |n: f64| p.time_of(n).unwrap();
        assert!((at(1000.0) - 1.0).abs() < 1e-9);
        assert!((at(5000.0) - 3.0).abs() < 1e-9);
        assert!((at(1000.0 + 1500.0) - 2.0).abs() < 1e-9, "{}", at(2500.0));
        assert!((at(6499.0) - 4.0).abs() < 0.05, "{}", at(6499.0));
        assert_eq!(p.time_of(6500.0), None, "nothing after the rate fell to 0");
        // Due times only go forwards, and the count in each second is the
        // profile's integral over it.
        let times: Vec<f64> = (0..6500).map(|n| at(n as f64)).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let in_second = |s: usize| times.iter().filter(|&&t| t as usize == s).count();
        assert_eq!(
            [in_second(0), in_second(1), in_second(2), in_second(3)],
            [1000, 1500, 2500, 1500]
        );
        // From 0: a ramp up from nothing starts at once.
        let up = Profile::ramps(0.0, &[(2.0, 1000.0)]);
        assert!((up.time_of(1000.0).unwrap() - 2.0).abs() < 1e-9);
        assert!(up.time_of(0.0).unwrap() < 1e-9);
    }

    #[test]
    fn connection_stages_ramp_the_count_that_sends() {
        let mut load = crate::test_load();
        assert!(Profile::connections_of(&load).is_none());
        load.warmup = 1.0;
        load.connection_stages = ["0s:10", "2s:30", "1s:30", "0s:5"]
            .map(|s| crate::options::ConnectionStage::parse(s).unwrap())
            .to_vec();
        let p = Profile::connections_of(&load).unwrap();
        // The warm-up at the first jump's count, then up by 10 a second.
        let counts: Vec<u32> = [0.0, 0.99, 1.0, 1.5, 2.0, 2.999, 3.0, 3.5, 4.0, 9.0]
            .map(|t| p.sending_at(t))
            .to_vec();
        assert_eq!(counts, [10, 10, 10, 15, 20, 29, 30, 30, 5, 5]);
        // Without a first jump, from nothing.
        load.connection_stages.remove(0);
        let p = Profile::connections_of(&load).unwrap();
        assert_eq!(p.sending_at(0.5), 0);
        assert_eq!(p.sending_at(2.0), 15);
    }
}

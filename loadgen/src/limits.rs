//! Pass/fail: a run against its limits (`run --max-p99 …`), and results
//! against a baseline (`compare --max-regression …`), for gating CI.

use crate::options::Limits;
use crate::result::{Percentiles, RunResult, Verdict};

/// Every limit that was set, judged against `result`.
pub fn judge(result: &RunResult, limits: &Limits) -> Vec<Verdict> {
    let s = &result.summary;
    let mut verdicts = Vec::new();
    let mut latency = |name: &str, limit: Option<u64>, measured: u64| {
        if let Some(limit) = limit {
            verdicts.push(Verdict {
                limit: format!("--{name} {limit} µs"),
                measured: format!("{measured} µs"),
                held: measured <= limit,
            });
        }
    };
    latency("max-p50", limits.max_p50, s.latency_us.p50);
    latency("max-p99", limits.max_p99, s.latency_us.p99);
    latency("max-p99.9", limits.max_p999, s.latency_us.p999);
    if let Some(min) = limits.min_rate {
        verdicts.push(Verdict {
            limit: format!("--min-rate {min} msgs/s"),
            measured: format!("{:.0} msgs/s", s.msgs_per_sec),
            held: s.msgs_per_sec >= min,
        });
    }
    let errors = s.errors.total();
    if let Some(max) = limits.max_errors {
        verdicts.push(Verdict {
            limit: format!("--max-errors {max}"),
            measured: format!("{errors} errors"),
            held: errors <= max,
        });
    }
    if let Some(max) = limits.max_error_rate {
        let share = errors as f64 / (s.messages + errors).max(1) as f64;
        verdicts.push(Verdict {
            limit: format!("--max-error-rate {}%", max * 100.0),
            measured: format!("{}%", share * 100.0),
            held: share <= max,
        });
    }
    verdicts
}

/// The figures `compare --max-regression` can look at.
pub const FIGURES: [&str; 7] = ["msgs/s", "p50", "p90", "p99", "p99.9", "p99.99", "max"];

/// A figure's value in a result, and whether higher is better.
fn figure(result: &RunResult, name: &str) -> Option<(f64, bool)> {
    let l: &Percentiles = &result.summary.latency_us;
    let latency = |v: u64| Some((v as f64, false));
    match name {
        "msgs/s" => Some((result.summary.msgs_per_sec, true)),
        "p50" => latency(l.p50),
        "p90" => latency(l.p90),
        "p99" => latency(l.p99),
        "p99.9" => latency(l.p999),
        "p99.99" => latency(l.p9999),
        "max" => latency(l.max),
        _ => None,
    }
}

/// Checks the figure names before anything is read.
pub fn check_figures(names: &[String]) -> Result<(), String> {
    match names.iter().find(|n| !FIGURES.contains(&n.as_str())) {
        Some(bad) => Err(format!(
            "--regression-in {bad:?}: choose from {}",
            FIGURES.join(", ")
        )),
        None if names.is_empty() => Err("--regression-in needs at least one figure".into()),
        None => Ok(()),
    }
}

/// Every figure of every result after the first that is worse than the
/// first's by more than `share`: (label, figure, baseline, value, change).
pub fn regressions(
    results: &[RunResult],
    share: f64,
    names: &[String],
) -> Vec<(String, String, f64, f64, f64)> {
    let Some((base, rest)) = results.split_first() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for r in rest {
        for name in names {
            let (Some((b, higher_is_better)), Some((v, _))) = (figure(base, name), figure(r, name))
            else {
                continue;
            };
            // The change for the worse, as a share of the baseline.
            let worse = if higher_is_better { b - v } else { v - b } / b.max(1e-9);
            if worse > share {
                found.push((r.label.clone(), name.clone(), b, v, worse));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_or_break_on_the_measured_figures() {
        // 100 echoes at 100..=199 µs, and a 5 ms outlier: p99 is 199, max 5000.
        let mut values: Vec<u64> = (100..200).collect();
        values.push(5000);
        let mut result = crate::test_result(&values, 101);
        let limits = Limits {
            max_p50: Some(200),
            max_p99: Some(150),
            min_rate: Some(50.0),
            ..Limits::default()
        };
        let verdicts = judge(&result, &limits);
        let held: Vec<(&str, bool)> = verdicts
            .iter()
            .map(|v| (v.limit.as_str(), v.held))
            .collect();
        assert_eq!(
            held,
            [
                ("--max-p50 200 µs", true),
                ("--max-p99 150 µs", false),
                ("--min-rate 50 msgs/s", true)
            ]
        );
        result.summary.errors.mismatches = 2;
        let limits = Limits {
            max_errors: Some(1),
            max_error_rate: Some(0.05),
            ..Limits::default()
        };
        let held: Vec<bool> = judge(&result, &limits).iter().map(|v| v.held).collect();
        assert_eq!(held, [false, true]);
        assert!(judge(&result, &Limits::default()).is_empty());
    }

    #[test]
    fn a_regression_is_worse_by_more_than_the_share_in_either_direction() {
        let base = crate::test_result(&[100; 100], 1000);
        let mut slower = crate::test_result(&[110; 100], 1000);
        slower.label = "slower".into();
        let mut fewer = crate::test_result(&[90; 100], 900);
        fewer.label = "fewer".into();
        let names = vec!["msgs/s".to_string(), "p99".to_string()];
        let found = regressions(&[base.clone(), slower, fewer], 0.05, &names);
        let which: Vec<(&str, &str)> = found
            .iter()
            .map(|(l, f, ..)| (l.as_str(), f.as_str()))
            .collect();
        // 10 % slower at p99; 10 % fewer messages (and faster, which is fine).
        assert_eq!(which, [("slower", "p99"), ("fewer", "msgs/s")]);
        assert!(regressions(&[base.clone(), base], 0.0, &names).is_empty());
        assert!(check_figures(&["p99.9".into()]).is_ok());
        assert!(check_figures(&["p95".into()])
            .unwrap_err()
            .contains("choose from"));
    }
}

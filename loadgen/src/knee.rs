//! `loadgen knee`: the highest rate a server sustains within limits.
//!
//! Each step is a whole paced run (connect, warm up, measure). The rate
//! doubles while every limit holds; after the first break it bisects
//! between the highest rate that held and the lowest that broke, until the
//! two are within `--precision`. A step holds when its limits hold, it saw
//! no error it was not told to tolerate, and its echoes kept up with 95 %
//! of the offered rate. A step where loadgen itself fell behind says
//! nothing of the server: it does not count as the server's break, but
//! caps the search, which goes on below it; the knee is then "at least"
//! what held, and the result names loadgen's ceiling.

use serde::{Deserialize, Serialize};

use crate::options::{KneeArgs, RunArgs, DEFAULT_KNEE_START_RATE};
use crate::result::RunResult;
use crate::result::Verdict;

pub const SCHEMA: &str = "ringecho-loadgen-knee/1";

/// Echoes must come back at this share of the offered rate or better.
pub const KEEP_UP: f64 = 0.95;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Knee {
    pub schema: String,
    /// The highest offered rate that held, if any did.
    pub knee_rate: Option<f64>,
    /// The lowest offered rate at which the server broke a limit, if any
    /// did (steps where loadgen fell behind are not counted).
    pub broke_at: Option<f64>,
    /// The lowest offered rate at which loadgen itself fell behind: above
    /// it this search could not see the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_ceiling: Option<f64>,
    /// Why the search stopped.
    pub stopped: String,
    /// Every step, in the order run: its offered rate, whether it held, and
    /// its whole result (limits judged, histograms, seconds).
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub offered: f64,
    pub held: bool,
    /// loadgen fell behind: the step measured loadgen, not the server.
    #[serde(default)]
    pub loadgen_bound: bool,
    pub result: RunResult,
}

impl Knee {
    /// The step at the knee.
    pub fn knee_step(&self) -> Option<&Step> {
        let rate = self.knee_rate?;
        self.steps.iter().find(|s| s.held && s.offered == rate)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Knee> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let knee: Knee = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a loadgen knee file", path.display()))?;
        anyhow::ensure!(
            knee.schema == SCHEMA,
            "{} has schema {:?}",
            path.display(),
            knee.schema
        );
        Ok(knee)
    }
}

impl KneeArgs {
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.max_p50.is_none() && l.max_p99.is_none() && l.max_p999.is_none() {
            return Err(
                "knee needs a latency limit to find the knee by: give --max-p99 (or --max-p50, --max-p99.9), e.g. --max-p99 1ms"
                    .into(),
            );
        }
        if !self.load.stages.is_empty() {
            return Err("knee sets the rate of each step itself: leave out --stages".into());
        }
        if !(self.precision > 0.0 && self.precision < 1.0) {
            return Err("--precision must be between 0% and 100%".into());
        }
        let mut load = self.load.clone();
        load.rate = Some(self.load.rate.unwrap_or(DEFAULT_KNEE_START_RATE));
        load.validate()
    }
}

/// Whether a step held, and the verdict that says it kept up (or not).
pub fn judge_step(result: &RunResult, offered: f64, tolerate_errors: bool) -> (bool, Verdict) {
    let achieved = result.summary.msgs_per_sec;
    let kept_up = Verdict {
        limit: format!(
            "echoes at ≥ {:.0} % of the offered {offered:.0} msgs/s",
            KEEP_UP * 100.0
        ),
        measured: format!("{achieved:.0} msgs/s"),
        held: achieved >= KEEP_UP * offered,
    };
    let errors_ok = tolerate_errors || result.summary.errors.total() == 0;
    let held = kept_up.held && errors_ok && result.limits.iter().all(|v| v.held);
    (held, kept_up)
}

/// The next rate to try, or None when the search is done.
pub fn next_rate(good: Option<f64>, bad: Option<f64>, precision: f64) -> Option<f64> {
    match (good, bad) {
        (Some(g), None) => Some(g * 2.0),
        (None, Some(b)) if b / 2.0 >= 1.0 => Some(b / 2.0),
        (None, Some(_)) => None,
        (Some(g), Some(b)) if (b - g) / g > precision => Some((g + b) / 2.0),
        _ => None,
    }
}

/// Runs the search; `progress` hears of each step as it ends.
pub fn search(args: &KneeArgs, mut progress: impl FnMut(&Step)) -> anyhow::Result<Knee> {
    let mut rate = args.load.rate.unwrap_or(DEFAULT_KNEE_START_RATE);
    let (mut good, mut bad, mut ceiling): (Option<f64>, Option<f64>, Option<f64>) =
        (None, None, None);
    let lower = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.min(b)));
    let mut steps = Vec::new();
    let mut stopped = format!("{} steps, the most --max-steps allows", args.max_steps);
    for _ in 0..args.max_steps {
        let mut load = args.load.clone();
        load.rate = Some(rate);
        let run = RunArgs {
            load,
            out: None,
            hgrm: None,
            hlog: None,
            quiet: args.quiet,
            label: Some(format!("{rate:.0} msgs/s offered")),
            limits: args.limits.clone(),
            start_at: None,
            server_pid: args.server_pid,
        };
        let mut result = crate::run::run(&run)?;
        let (held, kept_up) = judge_step(&result, rate, args.limits.tolerate_errors());
        result.limits.push(kept_up);
        let loadgen_bound = !held && result.summary.bottleneck.is_some();
        let step = Step {
            offered: rate,
            held,
            loadgen_bound,
            result,
        };
        progress(&step);
        steps.push(step);
        if held {
            good = Some(good.map_or(rate, |g: f64| g.max(rate)));
        } else if loadgen_bound {
            ceiling = lower(ceiling, rate);
        } else {
            bad = lower(bad, rate);
        }
        // loadgen's ceiling bounds the search as a break would.
        let upper = match (bad, ceiling) {
            (Some(b), Some(c)) => Some(b.min(c)),
            (b, c) => b.or(c),
        };
        match next_rate(good, upper, args.precision) {
            Some(next) => rate = next,
            None => {
                stopped = match (good, bad, ceiling) {
                    (Some(g), Some(b), c) if c.is_none_or(|c| b <= c) => format!(
                        "held at {g:.0} msgs/s, broke at {b:.0}: within {:.1} %",
                        args.precision * 100.0
                    ),
                    (Some(g), _, Some(c)) => format!(
                        "held at {g:.0} msgs/s; at {c:.0} loadgen itself fell behind, so the knee is at least {g:.0}: give loadgen more --threads or hosts to see further"
                    ),
                    _ => "no rate of 1 msg/s or more held".to_string(),
                };
                break;
            }
        }
    }
    Ok(Knee {
        schema: SCHEMA.into(),
        knee_rate: good,
        broke_at: bad,
        loadgen_ceiling: ceiling,
        stopped,
        steps,
    })
}

/// The steps as a table, the knee marked.
pub fn describe(knee: &Knee) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "offered msgs/s",
        "echoed msgs/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
        "server CPU",
        "loadgen CPU",
        "",
    ]);
    let cpu = |p: Option<&crate::result::ServerProcess>, secs: f64, cores: f64| {
        p.map_or("—".to_string(), |p| {
            format!(
                "{:.0} %",
                crate::result::utilisation(p, secs) / cores * 100.0
            )
        })
    };
    let mut order: Vec<&Step> = knee.steps.iter().collect();
    order.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    for step in order {
        let s = &step.result.summary;
        let mark = if Some(step.offered) == knee.knee_rate {
            "held ← knee".to_string()
        } else if step.held {
            "held".to_string()
        } else if step.loadgen_bound {
            "loadgen fell behind".to_string()
        } else {
            let broken: Vec<&str> = step
                .result
                .limits
                .iter()
                .filter(|v| !v.held)
                .map(|v| v.limit.as_str())
                .collect();
            format!("BROKE {}", broken.join("; "))
        };
        t.add_row([
            format!("{:.0}", step.offered),
            format!("{:.0}", s.msgs_per_sec),
            s.latency_us.p50.to_string(),
            s.latency_us.p99.to_string(),
            s.latency_us.p999.to_string(),
            s.latency_us.max.to_string(),
            s.errors.total().to_string(),
            cpu(s.server_process.as_ref(), s.duration_secs, 1.0),
            cpu(
                s.loadgen_process.as_ref(),
                s.duration_secs,
                step.result.load.threads as f64,
            ),
            mark,
        ]);
    }
    let headline = match knee.knee_step() {
        Some(step) => {
            let l = &step.result.summary.latency_us;
            format!(
                "knee: {:.0} msgs/s sustained (p50 {} µs, p99 {} µs, p99.9 {} µs){}",
                step.offered,
                l.p50,
                l.p99,
                l.p999,
                match (knee.broke_at, knee.loadgen_ceiling) {
                    (Some(b), _) => format!("; {b:.0} msgs/s broke"),
                    (None, Some(c)) => format!(
                        "; at least: loadgen fell behind at {c:.0} msgs/s, before the server broke"
                    ),
                    (None, None) => String::new(),
                }
            )
        }
        None => "knee: no rate held".to_string(),
    };
    format!("{t}\n{headline}\nstopped: {}\n", knee.stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_doubles_until_a_break_then_bisects_to_the_precision() {
        // A server that holds up to 5000 msgs/s, searched from 1000.
        let (mut good, mut bad) = (None, None);
        let mut rate = 1000.0;
        let mut tried = Vec::new();
        loop {
            tried.push(rate);
            if rate <= 5000.0 {
                good = Some(rate);
            } else {
                bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
            }
            match next_rate(good, bad, 0.05) {
                Some(next) => rate = next,
                None => break,
            }
        }
        assert_eq!(tried[..5], [1000.0, 2000.0, 4000.0, 8000.0, 6000.0]);
        let (g, b) = (good.unwrap(), bad.unwrap());
        assert!(g <= 5000.0 && b > 5000.0 && (b - g) / g <= 0.05, "{g} {b}");
        // Broken from the start: halve down, and give up below 1 msg/s.
        assert_eq!(next_rate(None, Some(1000.0), 0.05), Some(500.0));
        assert_eq!(next_rate(None, Some(1.5), 0.05), None);
    }

    #[test]
    fn a_step_holds_only_within_its_limits_and_keeping_up() {
        let mut result = crate::test_result(&[100; 10], 950);
        result.summary.msgs_per_sec = 950.0;
        assert!(judge_step(&result, 1000.0, false).0, "95 % keeps up");
        result.summary.msgs_per_sec = 900.0;
        let (held, verdict) = judge_step(&result, 1000.0, false);
        assert!(!held && !verdict.held);
        result.summary.msgs_per_sec = 1000.0;
        result.summary.errors.mismatches = 1;
        assert!(!judge_step(&result, 1000.0, false).0, "an error breaks it");
        assert!(
            judge_step(&result, 1000.0, true).0,
            "unless errors are judged by a limit"
        );
        result.limits.push(Verdict {
            limit: "--max-p99 1 µs".into(),
            measured: "100 µs".into(),
            held: false,
        });
        assert!(!judge_step(&result, 1000.0, true).0);
    }
}

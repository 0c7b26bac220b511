//! The picture of several runs: latency by percentile on the usual
//! "1/(1-p)" log axis (0 % to 99.999 %), the runs second by second
//! (throughput, p50 and p99 over time) when they kept their intervals, and
//! a throughput bar per run.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::result::RunResult;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Highest percentile shown: 99.999 %, i.e. 1/(1-p) = 100 000.
const X_MAX: f64 = 100_000.0;

pub fn plot(results: &[RunResult], path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!results.is_empty(), "nothing to plot");
    let mut curves = Vec::new();
    for r in results {
        let h = r.latency()?;
        let points: Vec<(f64, f64)> = h
            .iter_quantiles(10)
            .map(|v| {
                let q = v.quantile_iterated_to().min(1.0 - 1.0 / X_MAX);
                (1.0 / (1.0 - q), v.value_iterated_to().max(1) as f64)
            })
            .collect();
        curves.push((r.label.clone(), points));
    }
    let y_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 1.5;
    let y_min = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(f64::MAX, f64::min)
        .max(1.0)
        / 1.5;

    let over_time = results.iter().all(|r| !r.intervals.is_empty());
    let time_height = if over_time { 380 } else { 0 };
    let height = 560 + time_height + 40 * results.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(520);
    let (middle, bottom) = rest.split_vertically(time_height);
    if over_time {
        plot_over_time(results, &middle)?;
    }

    let mut chart = ChartBuilder::on(&top)
        .caption("Echo latency by percentile", ("sans-serif", 22))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..X_MAX).log_scale(), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart)?;

    // Throughput: one horizontal bar per run.
    let best = results
        .iter()
        .map(|r| r.summary.msgs_per_sec)
        .fold(1.0, f64::max);
    let n = results.len() as f64;
    let mut bars = ChartBuilder::on(&bottom)
        .caption("Throughput (messages per second)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..best * 1.25, 0.0..n)?;
    bars.configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for (i, r) in results.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // The first run on top; each bar fills most of its row.
        let row = n - 1.0 - i as f64;
        bars.draw_series(std::iter::once(Rectangle::new(
            [(0.0, row + 0.1), (r.summary.msgs_per_sec, row + 0.9)],
            color.mix(0.35).filled(),
        )))?;
        bars.draw_series(std::iter::once(Text::new(
            format!("{}: {:.0}", r.label, r.summary.msgs_per_sec),
            (best * 0.01, row + 0.7),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Throughput, p50 (thin) and p99 (thick) second by second; the warm-up
/// seconds shaded.
fn plot_over_time<DB: DrawingBackend>(
    results: &[RunResult],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    struct Series {
        warmup: f64,
        // (second's end, msgs/s, p50 µs, p99 µs)
        points: Vec<(f64, f64, f64, f64)>,
    }
    let mut all = Vec::new();
    for r in results {
        let mut points = Vec::new();
        for i in &r.intervals {
            let h = i.latency()?;
            points.push((
                i.offset_secs + i.length_secs,
                i.messages as f64 / i.length_secs.max(1e-9),
                h.value_at_quantile(0.5).max(1) as f64,
                h.value_at_quantile(0.99).max(1) as f64,
            ));
        }
        all.push(Series {
            warmup: r.load.warmup,
            points,
        });
    }
    let points = || all.iter().flat_map(|s| s.points.iter());
    let t_max = points().map(|p| p.0).fold(1.0, f64::max);
    let rate_max = points().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let lat_max = points().map(|p| p.3).fold(1.0, f64::max) * 1.5;
    let lat_min = points().map(|p| p.2).fold(f64::MAX, f64::min).max(1.0) / 1.5;
    let warmup = all.iter().map(|s| s.warmup).fold(0.0, f64::max);
    let (left, right) = area.split_horizontally(500);

    let mut rate = ChartBuilder::on(&left)
        .caption("Throughput over time (msgs/s)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max)?;
    rate.configure_mesh()
        .x_desc("seconds from the start (warm-up shaded)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    rate.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (warmup, rate_max)],
        BLACK.mix(0.06).filled(),
    )))?;
    for (i, s) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        rate.draw_series(LineSeries::new(
            s.points.iter().map(|p| (p.0, p.1)),
            color.stroke_width(2),
        ))?;
    }
    // --connection-stages: how many connections sent, dashed, its peak at
    // the top of the chart, so that throughput reads against it.
    for (i, r) in results.iter().enumerate() {
        let Some(profile) = crate::schedule::Profile::connections_of(&r.load) else {
            continue;
        };
        let peak = r.load.connections.max(1) as f64;
        let scale = rate_max / 1.15 / peak;
        let steps = (t_max * 20.0).ceil() as usize;
        let line: Vec<(f64, f64)> = (0..=steps)
            .map(|k| {
                let t = k as f64 / 20.0;
                (t, profile.sending_at(t) as f64 * scale)
            })
            .collect();
        rate.draw_series(DashedLineSeries::new(
            line,
            6,
            4,
            COLORS[i % COLORS.len()].mix(0.6).stroke_width(1),
        ))?;
        rate.draw_series(std::iter::once(Text::new(
            format!("dashed: connections sending, {peak:.0} at the top"),
            (t_max * 0.02, rate_max * 0.97),
            ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
        )))?;
    }

    let mut latency = ChartBuilder::on(&right)
        .caption(
            "p50 (thin) and p99 (thick) over time (µs)",
            ("sans-serif", 18),
        )
        .margin(15)
        .margin_right(30)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, (lat_min..lat_max).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    latency.draw_series(std::iter::once(Rectangle::new(
        [(0.0, lat_min), (warmup, lat_max)],
        BLACK.mix(0.06).filled(),
    )))?;
    for (i, s) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        latency.draw_series(LineSeries::new(
            s.points.iter().map(|p| (p.0, p.2)),
            color.stroke_width(1),
        ))?;
        // The colours are the runs' in the legend above.
        latency.draw_series(LineSeries::new(
            s.points.iter().map(|p| (p.0, p.3)),
            color.stroke_width(3),
        ))?;
    }
    Ok(())
}

/// The latency–throughput curve of a knee search: p50, p99 and p99.9
/// against the offered rate, each step a point (hollow where it broke),
/// the latency limits dashed and the knee marked.
pub fn plot_knee(
    knee: &crate::knee::Knee,
    limits: &crate::options::Limits,
    path: &Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(!knee.steps.is_empty(), "no step to plot");
    let mut steps: Vec<&crate::knee::Step> = knee.steps.iter().collect();
    steps.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    type Pick = fn(&crate::result::Percentiles) -> u64;
    let lines: [(&str, Pick, Option<u64>); 3] = [
        ("p50", |l| l.p50, limits.max_p50),
        ("p99", |l| l.p99, limits.max_p99),
        ("p99.9", |l| l.p999, limits.max_p999),
    ];
    let values = || {
        steps.iter().flat_map(|s| {
            let l = &s.result.summary.latency_us;
            lines.iter().map(move |(_, pick, _)| pick(l).max(1) as f64)
        })
    };
    let limit_values = lines
        .iter()
        .filter_map(|(_, _, limit)| limit.map(|v| v as f64));
    let y_max = values().chain(limit_values.clone()).fold(1.0, f64::max) * 2.0;
    let y_min = values()
        .chain(limit_values)
        .fold(f64::MAX, f64::min)
        .max(1.0)
        / 2.0;
    let x_max = steps.last().map_or(1.0, |s| s.offered) * 1.08;

    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let first = &steps[0].result;
    let caption = format!(
        "Latency against offered rate: {} B × {} connections{}",
        first.load.size,
        first.load.connections,
        match first.server["backend"].as_str() {
            Some(backend) => format!(", ringecho {backend}"),
            None => String::new(),
        }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered rate (messages per second); hollow: the step broke; dashed: the limits")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, pick, limit)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = steps
            .iter()
            .map(|s| (s.offered, pick(&s.result.summary.latency_us).max(1) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(steps.iter().zip(&points).map(|(s, &p)| {
            let style = if s.held {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            Circle::new(p, 5, style)
        }))?;
        if let Some(limit) = limit {
            chart.draw_series(DashedLineSeries::new(
                [(0.0, *limit as f64), (x_max, *limit as f64)],
                8,
                6,
                color.stroke_width(1),
            ))?;
        }
    }
    if let Some(rate) = knee.loadgen_ceiling {
        chart.draw_series(DashedLineSeries::new(
            [(rate, y_min), (rate, y_max)],
            2,
            6,
            RGBColor(127, 127, 127).stroke_width(2),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("loadgen fell behind at {rate:.0}/s"),
            (rate, y_max / 3.0),
            ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
        )))?;
    }
    if let Some(rate) = knee.knee_rate {
        chart.draw_series(DashedLineSeries::new(
            [(rate, y_min), (rate, y_max)],
            4,
            4,
            BLACK.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("knee {rate:.0}/s"),
            (rate, y_max / 1.6),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))?;
    }
    legend(&mut chart)?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Connection storms: connect + handshake time (p50 thin, p99 thick)
/// against the connection rate achieved, one colour per series (an engine
/// configuration, say), each storm a point.
pub fn plot_storms(series: &[(String, Vec<RunResult>)], path: &Path) -> anyhow::Result<()> {
    let point = |r: &RunResult, pick: fn(&crate::result::Percentiles) -> u64| {
        let s = &r.summary;
        let rate = s
            .connect_rate_achieved()
            .or(r.load.connect_rate)
            .unwrap_or(1.0);
        (rate.max(1.0), pick(&s.connect_us).max(1) as f64)
    };
    type Pick = fn(&crate::result::Percentiles) -> u64;
    let picks: [(&str, Pick, u32); 2] = [("p50", |c| c.p50, 1), ("p99", |c| c.p99, 3)];
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .flat_map(|r| picks.map(|(_, pick, _)| point(r, pick)))
        .collect();
    anyhow::ensure!(!all.is_empty(), "no storm to plot");
    let (x_min, x_max) = all.iter().fold((f64::MAX, 1.0f64), |(lo, hi), &(x, _)| {
        (lo.min(x), hi.max(x))
    });
    let (y_min, y_max) = all.iter().fold((f64::MAX, 1.0f64), |(lo, hi), &(_, y)| {
        (lo.min(y), hi.max(y))
    });

    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let first = &series[0].1[0];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Connect + handshake time in connection storms of {} connections",
                first.load.connections
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            (y_min / 2.0..y_max * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("connections per second achieved; thin: p50, thick: p99")
        .y_desc("connect + handshake (µs)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, runs)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut runs: Vec<&RunResult> = runs.iter().collect();
        runs.sort_by(|a, b| point(a, |c| c.p50).0.total_cmp(&point(b, |c| c.p50).0));
        for (what, pick, width) in picks {
            let points: Vec<(f64, f64)> = runs.iter().map(|r| point(r, pick)).collect();
            let drawn = chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(width),
            ))?;
            if what == "p99" {
                drawn.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            }
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    legend(&mut chart)?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The series' names, boxed in the upper left, as every plot here has them.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn percentile_label(x: f64) -> String {
    let nines = x.log10().round() as i32;
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_reads_as_nines() {
        let labels: Vec<String> = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5]
            .map(percentile_label)
            .to_vec();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }
}

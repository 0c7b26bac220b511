//! `GET /metrics`: the figures of `/stats` in Prometheus's text exposition
//! format (version 0.0.4), so that a Prometheus and a Grafana can watch a
//! long benchmark.
//!
//! Every figure comes twice: `ringecho_NAME` for the whole engine, and
//! `ringecho_worker_NAME{worker, core}` for each worker. They are separate
//! families so that `sum()` over the workers never counts the total again.
//! The process's own figures use Prometheus's standard `process_*` names.

use std::fmt::Write as _;

use crate::stats::{Counts, Kind, Process, Report};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` says about the engine besides its counters.
pub struct About<'a> {
    pub version: &'a str,
    pub commit: &'a str,
    pub backend: &'a str,
}

pub fn render(about: &About, report: &Report, process: &Process) -> String {
    let mut out = String::with_capacity(8192);
    family(
        &mut out,
        "ringecho_info",
        Kind::Gauge,
        "The engine's version, commit and backend; always 1.",
    );
    let _ = writeln!(
        out,
        "ringecho_info{{version=\"{}\",commit=\"{}\",backend=\"{}\"}} 1",
        label(about.version),
        label(about.commit),
        label(about.backend)
    );

    let totals = report.totals.values();
    let workers: Vec<Vec<u64>> = report.workers.iter().map(|w| w.counts.values()).collect();
    for (i, figure) in Counts::FIGURES.iter().enumerate() {
        let suffix = if figure.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        let help = figure.help.trim();
        let name = format!("ringecho_{}{suffix}", figure.metric);
        family(&mut out, &name, figure.kind, help);
        let _ = writeln!(out, "{name} {}", totals[i]);
        let name = format!("ringecho_worker_{}{suffix}", figure.metric);
        family(
            &mut out,
            &name,
            figure.kind,
            &format!("{help} One worker's."),
        );
        for (w, values) in report.workers.iter().zip(&workers) {
            let _ = writeln!(out, "{name}{{{}}} {}", worker_labels(w), values[i]);
        }
    }

    let help = "Connections ended, by close code (1006: no close frame either way; \
                other: codes not listed).";
    family(&mut out, "ringecho_closes_total", Kind::Counter, help);
    for (code, n) in &report.totals.closes {
        let _ = writeln!(out, "ringecho_closes_total{{code=\"{}\"}} {n}", label(code));
    }
    family(
        &mut out,
        "ringecho_worker_closes_total",
        Kind::Counter,
        &format!("{help} One worker's."),
    );
    for w in &report.workers {
        for (code, n) in &w.counts.closes {
            let _ = writeln!(
                out,
                "ringecho_worker_closes_total{{{},code=\"{}\"}} {n}",
                worker_labels(w),
                label(code)
            );
        }
    }

    family(
        &mut out,
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
    );
    let cpu = process.cpu_user_secs + process.cpu_system_secs;
    let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
    family(
        &mut out,
        "ringecho_process_cpu_seconds_total",
        Kind::Counter,
        "CPU time spent in seconds, in user space and in the kernel.",
    );
    let _ = writeln!(
        out,
        "ringecho_process_cpu_seconds_total{{mode=\"user\"}} {}",
        process.cpu_user_secs
    );
    let _ = writeln!(
        out,
        "ringecho_process_cpu_seconds_total{{mode=\"system\"}} {}",
        process.cpu_system_secs
    );
    family(
        &mut out,
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
    );
    let _ = writeln!(
        out,
        "process_resident_memory_bytes {}",
        process.resident_bytes
    );
    family(
        &mut out,
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(
        out,
        "process_start_time_seconds {}",
        process.start_time_unix_secs
    );
    out
}

fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    // HELP text escapes backslash and line feed.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn worker_labels(w: &crate::stats::WorkerReport) -> String {
    match w.core {
        Some(core) => format!("worker=\"{}\",core=\"{core}\"", w.worker),
        None => format!("worker=\"{}\",core=\"none\"", w.worker),
    }
}

/// A label value escapes backslash, double quote and line feed.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::EngineStats;

    #[test]
    fn every_figure_is_a_family_with_a_total_and_one_series_per_worker() {
        let stats = EngineStats::new(vec![Some(0), None]);
        stats.worker(0).messages_in.add(3);
        stats.worker(1).messages_in.add(4);
        stats.worker(1).open_connections.add(2);
        stats.worker(0).count_close(1000);
        let about = About {
            version: "1.0",
            commit: "abc\"def",
            backend: "io-uring",
        };
        let process = Process::now(std::time::SystemTime::now());
        let text = render(&about, &stats.report(), &process);
        for line in [
            "# TYPE ringecho_received_messages_total counter",
            "ringecho_received_messages_total 7",
            "ringecho_worker_received_messages_total{worker=\"0\",core=\"0\"} 3",
            "ringecho_worker_received_messages_total{worker=\"1\",core=\"none\"} 4",
            "# TYPE ringecho_open_connections gauge",
            "ringecho_open_connections 2",
            "ringecho_closes_total{code=\"1000\"} 1",
            "ringecho_worker_closes_total{worker=\"0\",core=\"0\",code=\"1000\"} 1",
            "ringecho_info{version=\"1.0\",commit=\"abc\\\"def\",backend=\"io-uring\"} 1",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        // One HELP and one TYPE per family, each family's name once.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), types.len());
        assert_eq!(
            types.len(),
            text.lines().filter(|l| l.starts_with("# HELP ")).count()
        );
        assert_eq!(types.len(), 2 * Counts::FIGURES.len() + 2 + 1 + 4);
    }
}

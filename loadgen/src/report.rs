//! Tables for people: one run's summary, and several runs side by side.

use std::collections::BTreeMap;

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{CellAlignment, Table};

use crate::result::RunResult;

/// Terminal or Markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Terminal,
    Markdown,
}

fn table(style: Style) -> Table {
    let mut table = Table::new();
    table.load_preset(match style {
        Style::Terminal => UTF8_FULL_CONDENSED,
        Style::Markdown => ASCII_MARKDOWN,
    });
    table
}

/// The summary of one run: a line of context and the figures.
pub fn summary(result: &RunResult) -> String {
    let s = &result.summary;
    let l = &s.latency_us;
    let mut t = table(Style::Terminal);
    t.set_header([
        "msgs/s",
        "MiB/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "p99.99 µs",
        "max µs",
        "errors",
    ]);
    t.add_row([
        format!("{:.0}", s.msgs_per_sec),
        format!("{:.2}", s.mib_per_sec),
        l.p50.to_string(),
        l.p90.to_string(),
        l.p99.to_string(),
        l.p999.to_string(),
        l.p9999.to_string(),
        l.max.to_string(),
        s.errors.total().to_string(),
    ]);
    right_align(&mut t, 0);
    let load = &result.load;
    let mut out = format!(
        "{} — {} B {} messages over {} {}connections, {} for {} s after {} s warm-up, server {}\n{t}\n",
        result.label,
        load.size,
        match load.message_type {
            crate::options::MessageType::Binary => "binary",
            crate::options::MessageType::Text => "text",
        },
        s.connections,
        if load.url.starts_with("wss://") { "TLS " } else { "" },
        load.mode(),
        load.duration,
        load.warmup,
        server_name(result),
    );
    if let (Some(p), Some(shard)) = (&s.server_process, load.shard) {
        // The server served every shard over this window: its CPU per
        // message is the merged result's to say.
        out.push_str(&format!(
            "server (pid {}, {}): {:.0} % of a core, {:.1} MiB resident, serving all {} shards (CPU per message: see the merged result)\n",
            p.pid,
            match p.source {
                crate::result::ProcessSource::Proc => "from /proc",
                crate::result::ProcessSource::Stats => "from its /stats",
            },
            crate::result::utilisation(p, s.duration_secs) * 100.0,
            p.rss_bytes_end as f64 / (1024.0 * 1024.0),
            shard.count
        ));
    } else if let (Some(p), Some((user, system, total))) = (&s.server_process, s.cpu_per_million())
    {
        out.push_str(&format!(
            "server (pid {}, {}): {total:.2} CPU s per million messages ({user:.2} user, {system:.2} system), {:.0} % of a core, {:.1} MiB resident\n",
            p.pid,
            match p.source {
                crate::result::ProcessSource::Proc => "from /proc",
                crate::result::ProcessSource::Stats => "from its /stats",
            },
            crate::result::utilisation(p, s.duration_secs) * 100.0,
            p.rss_bytes_end as f64 / (1024.0 * 1024.0)
        ));
    }
    if let Some(p) = &s.loadgen_process {
        let per_million = if s.messages > 0 {
            (p.user_secs + p.system_secs) * 1e6 / s.messages as f64
        } else {
            0.0
        };
        out.push_str(&format!(
            "loadgen ({} I/O, {} thread{}): {per_million:.2} CPU s per million messages, {:.0} % of its core{}\n",
            match load.io {
                crate::options::Io::IoUring => "io_uring",
                _ => "tokio",
            },
            load.threads,
            if load.threads == 1 { "" } else { "s" },
            crate::result::utilisation(p, s.duration_secs) / load.threads as f64 * 100.0,
            if load.threads == 1 { "" } else { "s" },
        ));
    }
    if let Some(lag) = &s.send_lag_us {
        out.push_str(&format!(
            "send lag (how late sends left their schedule{}): p50 {} µs, p99 {} µs, max {} µs\n",
            match load.io {
                crate::options::Io::IoUring => format!("; slack {} µs", load.send_slack_us),
                _ => String::new(),
            },
            lag.p50,
            lag.p99,
            lag.max
        ));
    }
    if let Some(sent) = s.broadcasts_sent {
        out.push_str(&format!(
            "broadcast: {sent} sent by {} connection{} ({:.0}/s over the run), each due at {} connections; \
             msgs/s counts deliveries; missing {}, duplicated {}\n",
            load.senders,
            if load.senders == 1 { "" } else { "s" },
            sent as f64 / (load.warmup + load.duration),
            s.connections,
            s.errors.missing,
            s.errors.duplicated
        ));
    }
    if let Some(warning) = &s.bottleneck {
        out.push_str(&format!("WARNING: {warning}\n"));
    }
    if s.unpinned_threads > 0 {
        out.push_str(&format!(
            "WARNING: {} load thread(s) could not be pinned to their cores and ran unpinned\n",
            s.unpinned_threads
        ));
    }
    if load.connect_rate.is_some() || s.errors.connect_failures > 0 {
        let c = &s.connect_us;
        let failed: Vec<String> = s
            .errors
            .connect_failures_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} ×{n}"))
            .collect();
        out.push_str(&format!(
            "connect + handshake{}: p50 {} µs, p99 {} µs, max {} µs over {} connections{}\n",
            match (load.connect_rate, s.connect_rate_achieved()) {
                (Some(r), Some(achieved)) => {
                    format!(" at {r} per second ({achieved:.0} achieved)")
                }
                (Some(r), None) => format!(" at {r} per second"),
                _ => String::new(),
            },
            c.p50,
            c.p99,
            c.max,
            s.connections,
            if failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} failed: {}",
                    s.errors.connect_failures,
                    failed.join(", ")
                )
            }
        ));
    }
    if !result.parts.is_empty() {
        out.push_str(&parts(result));
    }
    for v in &result.limits {
        out.push_str(&format!(
            "limit {}: {} ({})\n",
            v.limit,
            if v.held { "held" } else { "BROKEN" },
            v.measured
        ));
    }
    let e = &s.errors;
    if e.total() > 0 || s.unanswered > 0 {
        out.push_str(&format!(
            "errors: {} mismatched echoes, {} unexpected frames, {} unexpected closes, {} failed connections{}; {} messages unanswered\n",
            e.mismatches, e.unexpected_frames, e.unexpected_closes, e.connect_failures,
            if s.broadcasts_sent.is_some() {
                format!(", {} missing and {} duplicated deliveries", e.missing, e.duplicated)
            } else {
                String::new()
            },
            s.unanswered
        ));
    }
    out
}

/// A merged result's parts, a line each: what each host did and what its
/// own load generator cost it.
fn parts(result: &RunResult) -> String {
    let mut t = table(Style::Terminal);
    t.set_header([
        "part",
        "host",
        "msgs/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "errors",
        "loadgen CPU",
    ]);
    for part in &result.parts {
        let s = &part.summary;
        t.add_row([
            part.shard
                .map_or("part".to_string(), |shard| format!("shard {shard}")),
            part.host.clone(),
            format!("{:.0}", s.msgs_per_sec),
            s.latency_us.p50.to_string(),
            s.latency_us.p99.to_string(),
            s.latency_us.max.to_string(),
            s.errors.total().to_string(),
            s.loadgen_process.as_ref().map_or("—".to_string(), |p| {
                format!(
                    "{:.0} % of {} core{}",
                    crate::result::utilisation(p, s.duration_secs) / result.load.threads as f64
                        * 100.0,
                    result.load.threads,
                    if result.load.threads == 1 { "" } else { "s" }
                )
            }),
        ]);
    }
    right_align(&mut t, 2);
    format!("each part:\n{t}\n")
}

fn server_name(result: &RunResult) -> String {
    let server = &result.server;
    if server["known"] == true {
        format!(
            "{} {} ({})",
            server["software"].as_str().unwrap_or("?"),
            server["version"].as_str().unwrap_or("?"),
            server["backend"].as_str().unwrap_or("?")
        )
    } else {
        "unknown".to_string()
    }
}

/// The configuration of a run as flat `key = value` pairs, for finding what
/// differs between runs. Ports and dates change every run and say nothing.
fn configuration(result: &RunResult) -> BTreeMap<String, String> {
    let mut flat = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(&result.load).unwrap_or_default(),
        &mut flat,
    );
    flatten("server.", &result.server["config"], &mut flat);
    flat.insert("server".into(), server_name(result));
    for noise in ["url", "server.listen", "server.commit"] {
        flat.remove(noise);
    }
    flat
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}{k}."), v, out);
            }
        }
        serde_json::Value::Null if prefix.is_empty() => {}
        other => {
            let key = prefix.trim_end_matches('.').to_string();
            let text = match other {
                serde_json::Value::Null => "—".to_string(),
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            out.insert(key, text);
        }
    }
}

/// Runs side by side, followed by the settings they all share.
pub fn compare(results: &[RunResult], style: Style) -> String {
    let mut out = compare_table(results, style);
    out.push_str(&common_settings(results));
    out
}

/// The configuration keys that differ between runs (runs that lack a key,
/// such as an unknown server's settings, do not count).
fn differing_keys(configs: &[BTreeMap<String, String>]) -> Vec<String> {
    let mut all: Vec<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .filter(|k| {
            let mut values = configs.iter().filter_map(|c| c.get(*k));
            let first = values.next();
            values.any(|v| Some(v) != first)
        })
        .cloned()
        .collect()
}

/// "Same in every run: …", for a reader who wants the whole configuration.
pub fn common_settings(results: &[RunResult]) -> String {
    let configs: Vec<BTreeMap<String, String>> = results.iter().map(configuration).collect();
    let keys = differing_keys(&configs);
    let Some(first) = configs.first() else {
        return String::new();
    };
    let same: Vec<String> = first
        .iter()
        .filter(|(k, _)| !keys.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("\nSame in every run: {}\n", same.join(", "))
}

/// The configuration keys that differ come first, then throughput and
/// latency with their ratio to the first run.
pub fn compare_table(results: &[RunResult], style: Style) -> String {
    let configs: Vec<BTreeMap<String, String>> = results.iter().map(configuration).collect();
    let keys = differing_keys(&configs);
    let mut t = table(style);
    let mut header = vec!["run".to_string()];
    header.extend(keys.iter().map(|k| k.to_string()));
    header.extend(
        [
            "msgs/s",
            "MiB/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "errors",
        ]
        .map(String::from),
    );
    // Server CPU per message, when every run measured it.
    let cpu = results
        .iter()
        .all(|r| r.summary.cpu_per_million().is_some());
    if cpu {
        header.push("CPU s/M msgs (usr+sys)".into());
    }
    // Who was busy: the server (of one core) and loadgen (of its cores).
    let busy = results
        .iter()
        .all(|r| r.summary.server_process.is_some() && r.summary.loadgen_process.is_some());
    if busy {
        header.push("server / loadgen busy".into());
    }
    t.set_header(header);
    let base = results.first().map(|r| &r.summary);
    for (result, config) in results.iter().zip(&configs) {
        let s = &result.summary;
        let with_ratio = |value: f64, base: Option<f64>, digits: usize| match base {
            Some(b) if b > 0.0 => format!("{value:.digits$} ({:.2}×)", value / b),
            _ => format!("{value:.digits$}"),
        };
        let b = base.expect("a first run");
        let mut row = vec![result.label.clone()];
        row.extend(
            keys.iter()
                .map(|k| config.get(k).cloned().unwrap_or_else(|| "—".into())),
        );
        row.extend([
            with_ratio(s.msgs_per_sec, Some(b.msgs_per_sec), 0),
            format!("{:.2}", s.mib_per_sec),
            with_ratio(s.latency_us.p50 as f64, Some(b.latency_us.p50 as f64), 0),
            with_ratio(s.latency_us.p99 as f64, Some(b.latency_us.p99 as f64), 0),
            with_ratio(s.latency_us.p999 as f64, Some(b.latency_us.p999 as f64), 0),
            s.latency_us.max.to_string(),
            s.errors.total().to_string(),
        ]);
        if let (true, Some((user, system, total)), Some((.., base_total))) =
            (cpu, s.cpu_per_million(), b.cpu_per_million())
        {
            row.push(format!(
                "{} = {user:.2}+{system:.2}",
                with_ratio(total, Some(base_total), 2)
            ));
        }
        if let (true, Some(server), Some(own)) = (busy, &s.server_process, &s.loadgen_process) {
            let d = s.duration_secs;
            row.push(format!(
                "{:.0} % / {:.0} %{}",
                crate::result::utilisation(server, d) * 100.0,
                crate::result::utilisation(own, d) / result.load.threads as f64 * 100.0,
                if s.bottleneck.is_some() { " (!)" } else { "" }
            ));
        }
        t.add_row(row);
    }
    let mut out = t.to_string();
    out.push('\n');
    for result in results {
        if let Some(warning) = &result.summary.bottleneck {
            out.push_str(&format!("WARNING, {}: {warning}\n", result.label));
        }
    }
    out
}

fn right_align(t: &mut Table, from: usize) {
    for i in from..t.column_count() {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Percentiles;

    fn run(label: &str, connections: u32, buffer: u64, msgs_per_sec: f64, p99: u64) -> RunResult {
        let mut result = crate::test_result(&[], 0);
        result.label = label.into();
        result.load.connections = connections;
        result.server = serde_json::json!({"known": true, "software": "ringecho", "version": "0.1.0",
            "backend": "epoll", "config": {"receive_buffer_size": buffer, "listen": format!("127.0.0.1:{buffer}")}});
        result.summary.msgs_per_sec = msgs_per_sec;
        result.summary.latency_us = Percentiles {
            p99,
            p50: p99 / 2,
            ..Percentiles::default()
        };
        result
    }

    #[test]
    fn compare_shows_what_differs_first_and_ratios_to_the_first_run() {
        let results = [
            run("a", 100, 4096, 1000.0, 100),
            run("b", 100, 65536, 1500.0, 50),
        ];
        let text = compare(&results, Style::Markdown);
        let header = text.lines().next().unwrap();
        let columns: Vec<&str> = header
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            &columns[..3],
            &["run", "server.receive_buffer_size", "msgs/s"],
            "{text}"
        );
        assert!(text.contains("1500 (1.50×)"), "{text}");
        assert!(text.contains("50 (0.50×)"), "{text}");
        // Connections are equal, and the port is noise: neither is a column.
        assert!(
            !header.contains("connections") && !header.contains("listen"),
            "{header}"
        );
        assert!(text.contains("connections=100"), "{text}");
    }
}

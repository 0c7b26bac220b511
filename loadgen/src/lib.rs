//! loadgen: a WebSocket echo load generator that checks every echo and keeps
//! its latency in HdrHistogram.
//!
//! [`run`] drives the load through [`client`] connections (or, for the
//! hub's fallbacks, [`transport`] ones) on [`schedule`], paced by
//! [`pacing`], with [`payload`] patterns; [`result`] files hold everything a run was;
//! [`report`] and [`plot`] put runs side by side; [`options`] defines the
//! command line.

pub mod broadcast;
pub mod client;
pub mod cluster;
pub mod hub;
pub mod knee;
pub mod limits;
mod load_thread;
pub mod options;
pub mod pacing;
pub mod payload;
pub mod plot;
pub mod report;
pub mod result;
pub mod ring;
pub mod run;
pub mod schedule;
pub mod server_info;
pub mod soak;
pub mod tls;
pub mod transport;

use anyhow::Context as _;

pub use options::{LoadConfig, RunArgs};
pub use result::RunResult;

/// Writes the files a run asked for and returns whether it was clean.
pub fn save_outputs(args: &RunArgs, result: &RunResult) -> anyhow::Result<()> {
    // `--out -` went to standard output already.
    if let Some(path) = args.out.as_ref().filter(|p| p.as_os_str() != "-") {
        result.save(path)?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, result::hgrm(&result.latency()?))?;
    }
    if let Some(path) = &args.hlog {
        std::fs::write(path, result::hlog(result)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn test_load() -> LoadConfig {
    LoadConfig::with_defaults("ws://127.0.0.1:8080/ws")
}

/// A plausible result holding `values` as its latencies, for unit tests.
#[cfg(test)]
pub(crate) fn test_result(values: &[u64], messages: u64) -> RunResult {
    use result::*;
    let mut latency = new_histogram();
    for &v in values {
        latency.record(v).unwrap();
    }
    let connect = new_histogram();
    RunResult {
        schema: SCHEMA.into(),
        label: "test".into(),
        date: "2026-11-25T00:00:00Z".into(),
        tool: Tool {
            name: "loadgen".into(),
            version: "0".into(),
            commit: "abc".into(),
        },
        load: test_load(),
        server: serde_json::json!({"known": false}),
        machine: Machine {
            host: "test".into(),
            cpu_model: "cpu".into(),
            cores: 2,
            kernel: "6".into(),
        },
        summary: Summary {
            duration_secs: 1.0,
            messages,
            msgs_per_sec: messages as f64,
            latency_us: Percentiles::of(&latency),
            connect_us: Percentiles::of(&connect),
            merged_from: 1,
            window: Some(Window {
                start_unix_secs: 1_800_000_000.0,
                end_unix_secs: 1_800_000_001.0,
            }),
            ..Summary::default()
        },
        histograms: Histograms {
            latency_us: encode_histogram(&latency),
            connect_us: encode_histogram(&connect),
        },
        parts: Vec::new(),
        intervals: Vec::new(),
        limits: Vec::new(),
    }
}

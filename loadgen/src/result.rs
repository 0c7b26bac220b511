//! The result file: the load and server configuration, the machine, the
//! summary and the histograms themselves (HdrHistogram V2, base64), so that
//! runs can be compared, merged exactly and re-plotted later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::options::LoadConfig;

pub const SCHEMA: &str = "ringecho-loadgen-result/1";
/// Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant digits.
pub const LATENCY_MAX_US: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: String,
    pub label: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub tool: Tool,
    pub load: LoadConfig,
    /// The server's configuration as its `/stats` reported it, or
    /// `{"known": false}`.
    pub server: serde_json::Value,
    pub machine: Machine,
    pub summary: Summary,
    pub histograms: Histograms,
    /// A merged result's parts: each host's or process's own summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// The run second by second, warm-up included: what happened at
    /// second 37. Every thread's (and, merged, every host's) echoes of that
    /// second in one histogram.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<Interval>,
    /// The pass/fail limits the run was given (`--max-p99` …), judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Verdict>,
}

/// One second of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    /// Seconds from the start of the warm-up to the start of this interval.
    pub offset_secs: f64,
    pub length_secs: f64,
    /// Echoes received in it.
    pub messages: u64,
    /// Their latency, µs, encoded as `histograms` are.
    pub latency_us: String,
}

impl Interval {
    pub fn new(offset_secs: f64, length_secs: f64, h: &Histogram<u64>) -> Interval {
        Interval {
            offset_secs,
            length_secs,
            messages: h.len(),
            latency_us: encode_histogram(h),
        }
    }

    pub fn latency(&self) -> anyhow::Result<Histogram<u64>> {
        decode_histogram(&self.latency_us)
    }
}

/// Intervals of runs that started together added second by second: the
/// n-th of each goes into the n-th of the sum.
pub fn add_intervals(into: &mut Vec<Interval>, other: &[Interval]) -> anyhow::Result<()> {
    for (n, interval) in other.iter().enumerate() {
        if n < into.len() {
            let mut sum = into[n].latency()?;
            sum.add(interval.latency()?)?;
            into[n] = Interval::new(into[n].offset_secs, into[n].length_secs, &sum);
        } else {
            into.push(interval.clone());
        }
    }
    Ok(())
}

/// The HdrHistogram interval log (`.hlog`) of a run's intervals, as
/// HdrHistogram's own tools read it (Java's HistogramLogProcessor, the
/// Python and Go ports): compressed V2 histograms, values in µs, time
/// stamps in seconds from the start of the warm-up (BaseTime).
pub fn hlog(result: &RunResult) -> anyhow::Result<Vec<u8>> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let start = result
        .summary
        .window
        .map(|w| w.start_unix_secs - result.load.warmup)
        .unwrap_or(0.0);
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(start.max(0.0));
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "loadgen {}: {}",
            result.tool.version, result.label
        ))
        .add_comment("values in microseconds; the first seconds are the warm-up")
        .add_comment(&format!(
            "warm-up {} s, then {} s measured",
            result.load.warmup, result.load.duration
        ))
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut out, &mut serializer)?;
    // The column legend, as Java's HistogramLogWriter writes it.
    out.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    let mut writer = IntervalLogWriterBuilder::new().begin_log_with(&mut out, &mut serializer)?;
    for interval in &result.intervals {
        writer
            .write_histogram(
                &interval.latency()?,
                std::time::Duration::from_secs_f64(interval.offset_secs),
                std::time::Duration::from_secs_f64(interval.length_secs),
                None,
            )
            .map_err(|e| anyhow::anyhow!("writing the interval log: {e}"))?;
    }
    drop(writer);
    Ok(out)
}

/// One of the results a merge added up, as it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::options::Shard>,
    pub label: String,
    pub summary: Summary,
}

/// One limit as judged: what it was, what the run did, and whether it held.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// The option as given: "--max-p99 1000 µs".
    pub limit: String,
    /// What the run measured, in the same unit.
    pub measured: String,
    pub held: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub version: String,
    pub commit: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    /// The host's name (shards of one load tell their hosts apart by it).
    #[serde(default)]
    pub host: String,
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Measured seconds (the warm-up excluded).
    pub duration_secs: f64,
    /// Echoes received and checked within the measured window.
    pub messages: u64,
    pub msgs_per_sec: f64,
    /// Payload MiB per second, one direction.
    pub mib_per_sec: f64,
    pub latency_us: Percentiles,
    pub connect_us: Percentiles,
    pub connections: u64,
    pub errors: Errors,
    /// Messages still unanswered when the run stopped waiting (2 s after its end).
    pub unanswered: u64,
    /// How many result files were merged into this one (1 for a plain run).
    #[serde(default = "one")]
    pub merged_from: u64,
    /// The server process over the measured window, with --server-pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_process: Option<ServerProcess>,
    /// loadgen's own process over the measured window: is it the bottleneck?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_process: Option<ServerProcess>,
    /// Constant rate: how late sends left after their due time, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Percentiles>,
    /// Set when loadgen was saturated and the server was not: the run then
    /// measured the load generator, not the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<String>,
    /// Load threads that asked for a core and could not be pinned to it:
    /// they ran where the scheduler put them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpinned_threads: u32,
    /// Seconds from the first connection attempt to the last answer (open
    /// or failed): at --connect-rate, the attempts over it are the rate
    /// achieved. Missing in results from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connecting_secs: Option<f64>,
    /// The measured window on the wall clock (missing in results from
    /// before shards); a merge checks that its parts' windows agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Broadcast: messages sent, over the whole run (warm-up included); each
    /// was due at every connection. `messages` counts deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcasts_sent: Option<u64>,
}

/// A measured window on the wall clock, seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub start_unix_secs: f64,
    pub end_unix_secs: f64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the server process spent during the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerProcess {
    pub pid: u32,
    /// Where the figures came from: this host's /proc (--server-pid), or
    /// the server's own `/stats`, read from any host.
    #[serde(default)]
    pub source: ProcessSource,
    /// CPU seconds in user space and in the kernel on the process's behalf.
    pub user_secs: f64,
    pub system_secs: f64,
    /// Resident memory at the start and at the end of the window.
    pub rss_bytes_start: u64,
    pub rss_bytes_end: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProcessSource {
    #[default]
    Proc,
    Stats,
}

/// A process's share of one core over the window, from its CPU seconds.
pub fn utilisation(p: &ServerProcess, seconds: f64) -> f64 {
    (p.user_secs + p.system_secs) / seconds.max(1e-9)
}

impl Summary {
    /// Connection attempts per second over the connecting time.
    pub fn connect_rate_achieved(&self) -> Option<f64> {
        let secs = self.connecting_secs.filter(|&s| s > 0.0)?;
        Some((self.connections + self.errors.connect_failures) as f64 / secs)
    }

    /// loadgen's utilisation (of its `threads` cores) and the server's (of
    /// one core), when both were measured, and the warning when loadgen was
    /// saturated while the server was not.
    pub fn bottleneck_warning(&self, threads: u16, closed_loop: bool) -> Option<String> {
        let own = utilisation(self.loadgen_process.as_ref()?, self.duration_secs) / threads as f64;
        let server = self
            .server_process
            .as_ref()
            .map(|p| utilisation(p, self.duration_secs));
        let cores = format!("{threads} core{}", if threads == 1 { "" } else { "s" });
        // Closed loop: loadgen's cores full. Constant rate: sends late.
        let why = match &self.send_lag_us {
            Some(lag) if lag.p99 > 1000 => format!(
                "loadgen's sends were late (send lag p99 {} µs; loadgen at {:.0} % of its {cores})",
                lag.p99,
                own * 100.0
            ),
            None if closed_loop && own >= 0.90 => {
                format!(
                    "loadgen was saturated ({:.0} % of its {cores})",
                    own * 100.0
                )
            }
            _ => return None,
        };
        match server {
            Some(server) if server < 0.95 => Some(format!(
                "{why} while the server used {:.0} % of a core: this run measured the load generator, not the server",
                server * 100.0
            )),
            Some(_) => None,
            None => Some(format!(
                "{why}; without --server-pid it cannot tell whether the server was the limit"
            )),
        }
    }

    /// Server CPU seconds per million echoed messages: user, system, total.
    pub fn cpu_per_million(&self) -> Option<(f64, f64, f64)> {
        let p = self.server_process.as_ref()?;
        if self.messages == 0 {
            return None;
        }
        let per = 1e6 / self.messages as f64;
        Some((
            p.user_secs * per,
            p.system_secs * per,
            (p.user_secs + p.system_secs) * per,
        ))
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Errors {
    /// Echoes whose bytes, length or type differ from what was sent.
    pub mismatches: u64,
    /// Data frames nobody asked for, and frames that break the protocol.
    pub unexpected_frames: u64,
    /// Connections the server closed or reset during the run.
    pub unexpected_closes: u64,
    pub connect_failures: u64,
    /// Broadcast: deliveries that never came (sent × receivers, less those
    /// delivered), and deliveries that came twice.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub missing: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub duplicated: u64,
    /// The connect failures by kind: "refused", "timeout", "reset",
    /// "HTTP 503" (the handshake's answer), "other".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connect_failures_by_kind: BTreeMap<String, u64>,
}

impl Errors {
    /// The failed connections by kind, "500 HTTP 503, 3 refused"; empty
    /// when none failed.
    pub fn failures_by_kind(&self) -> String {
        let kinds: Vec<String> = (self.connect_failures_by_kind.iter())
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        kinds.join(", ")
    }

    pub fn total(&self) -> u64 {
        self.mismatches
            + self.unexpected_frames
            + self.unexpected_closes
            + self.connect_failures
            + self.missing
            + self.duplicated
    }

    pub fn add(&mut self, other: &Errors) {
        self.mismatches += other.mismatches;
        self.unexpected_frames += other.unexpected_frames;
        self.unexpected_closes += other.unexpected_closes;
        self.connect_failures += other.connect_failures;
        self.missing += other.missing;
        self.duplicated += other.duplicated;
        for (kind, n) in &other.connect_failures_by_kind {
            *self
                .connect_failures_by_kind
                .entry(kind.clone())
                .or_default() += n;
        }
    }

    /// Counts one connect failure, of the kind `why` says.
    pub fn connect_failed(&mut self, why: &str) {
        self.connect_failures += 1;
        *self
            .connect_failures_by_kind
            .entry(crate::client::failure_kind(why))
            .or_default() += 1;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Histograms {
    /// Echo latency, µs, HdrHistogram V2 serialization in base64.
    pub latency_us: String,
    /// TCP connect plus WebSocket handshake, µs, same encoding.
    pub connect_us: String,
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serializing into memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_histogram(encoded: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

impl RunResult {
    pub fn latency(&self) -> anyhow::Result<Histogram<u64>> {
        decode_histogram(&self.histograms.latency_us)
    }

    pub fn connect(&self) -> anyhow::Result<Histogram<u64>> {
        decode_histogram(&self.histograms.connect_us)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read result file {}", path.display()))?;
        let result: RunResult = match serde_json::from_str(&text) {
            Ok(result) => result,
            // A log with the result on a line of its own (`run --out -`
            // under kubectl logs, say), among other lines.
            Err(e) => {
                let mut found = text
                    .lines()
                    .filter(|line| line.starts_with('{'))
                    .filter_map(|line| serde_json::from_str::<RunResult>(line).ok());
                match (found.next(), found.next()) {
                    (Some(result), None) => result,
                    (Some(_), Some(_)) => anyhow::bail!(
                        "{} holds more than one loadgen result: give each its own file",
                        path.display()
                    ),
                    (None, _) => {
                        return Err(e).with_context(|| {
                            format!("{} is not a loadgen result file", path.display())
                        })
                    }
                }
            }
        };
        anyhow::ensure!(
            result.schema == SCHEMA,
            "{} has schema {:?}; this loadgen reads {SCHEMA:?}",
            path.display(),
            result.schema
        );
        Ok(result)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Adds up runs made at the same time (the shards of one load, or
    /// several processes or hosts on one server): histograms are added
    /// exactly, throughputs summed. Refuses results that were not one load
    /// at one time: a different URL, size, type, protocol, mode, rate or
    /// length; shards that are missing, twice or of different counts; or
    /// windows that start more than `tolerance_secs` apart.
    pub fn merge(results: &[RunResult], tolerance_secs: f64) -> anyhow::Result<RunResult> {
        let (first, rest) = results.split_first().context("nothing to merge")?;
        check_mergeable(results, tolerance_secs)?;
        let sharded = first.load.shard.is_some();
        let mut latency = first.latency()?;
        let mut connect = first.connect()?;
        let mut merged = first.clone();
        for r in rest {
            latency.add(r.latency()?)?;
            connect.add(r.connect()?)?;
            let (s, o) = (&mut merged.summary, &r.summary);
            s.duration_secs = s.duration_secs.max(o.duration_secs);
            s.messages += o.messages;
            s.msgs_per_sec += o.msgs_per_sec;
            s.mib_per_sec += o.mib_per_sec;
            s.connections += o.connections;
            s.unanswered += o.unanswered;
            s.merged_from += o.merged_from;
            s.unpinned_threads += o.unpinned_threads;
            // Hosts connect at the same time: the storm lasted the longest.
            s.connecting_secs = match (s.connecting_secs, o.connecting_secs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            s.errors.add(&o.errors);
            // Several load generators against one server all watched the
            // same process over the same window: one of them is the figure.
            if s.server_process.as_ref().map(|p| (p.pid, p.source))
                != o.server_process.as_ref().map(|p| (p.pid, p.source))
            {
                s.server_process = None;
            }
            s.window = match (s.window, o.window) {
                (Some(a), Some(b)) => Some(Window {
                    start_unix_secs: a.start_unix_secs.min(b.start_unix_secs),
                    end_unix_secs: a.end_unix_secs.max(b.end_unix_secs),
                }),
                _ => None,
            };
            // Shards carry the global load already; separate loads add up.
            if !sharded {
                merged.load.connections += r.load.connections;
                merged.load.rate = match (merged.load.rate, r.load.rate) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
        }
        // Each part's load generator is described in its own summary.
        merged.summary.loadgen_process = None;
        merged.summary.bottleneck = results.iter().find_map(|r| {
            let why = r.summary.bottleneck.as_ref()?;
            Some(format!("{} ({}): {why}", r.machine.host, part_name(r)))
        });
        merged.load.shard = None;
        // Limits are judged on what a run measured; a merge judges anew.
        merged.limits = Vec::new();
        merged.intervals = first.intervals.clone();
        for r in rest {
            add_intervals(&mut merged.intervals, &r.intervals)?;
        }
        merged.summary.latency_us = Percentiles::of(&latency);
        merged.summary.connect_us = Percentiles::of(&connect);
        merged.histograms = Histograms {
            latency_us: encode_histogram(&latency),
            connect_us: encode_histogram(&connect),
        };
        merged.parts = results
            .iter()
            .flat_map(|r| {
                if r.parts.is_empty() {
                    vec![Part {
                        host: r.machine.host.clone(),
                        shard: r.load.shard,
                        label: r.label.clone(),
                        summary: r.summary.clone(),
                    }]
                } else {
                    r.parts.clone()
                }
            })
            .collect();
        merged.label = format!("{} (merged ×{})", first.label, merged.summary.merged_from);
        Ok(merged)
    }
}

/// "shard 1/3", or "part" for a result that was not a shard.
pub fn part_name(r: &RunResult) -> String {
    match r.load.shard {
        Some(shard) => format!("shard {shard}"),
        None => "part".to_string(),
    }
}

fn check_mergeable(results: &[RunResult], tolerance_secs: f64) -> anyhow::Result<()> {
    let first = &results[0];
    let (a, name_a) = (&first.load, part_name(first));
    for r in &results[1..] {
        let (b, name_b) = (&r.load, part_name(r));
        let differ = |what: &str, x: String, y: String| -> anyhow::Result<()> {
            anyhow::ensure!(
                x == y,
                "these results were not one load: {what} is {x} in the first ({name_a}) and {y} in {} ({name_b})",
                r.label
            );
            Ok(())
        };
        differ("the URL", a.url.clone(), b.url.clone())?;
        differ("--size", a.size.to_string(), b.size.to_string())?;
        differ(
            "--type",
            format!("{:?}", a.message_type),
            format!("{:?}", b.message_type),
        )?;
        differ(
            "--protocol",
            format!("{:?}", a.protocol),
            format!("{:?}", b.protocol),
        )?;
        differ("the mode", a.mode().into(), b.mode().into())?;
        differ(
            "--in-flight",
            a.in_flight.to_string(),
            b.in_flight.to_string(),
        )?;
        differ("--duration", a.duration.to_string(), b.duration.to_string())?;
        differ("--deflate", a.deflate.to_string(), b.deflate.to_string())?;
        differ(
            "--payload",
            format!("{:?}", a.payload),
            format!("{:?}", b.payload),
        )?;
        differ(
            "--payload-file",
            format!("{:?}", a.payload_file),
            format!("{:?}", b.payload_file),
        )?;
        differ(
            "the shard count",
            a.shard.map_or("none".into(), |s| s.count.to_string()),
            b.shard.map_or("none".into(), |s| s.count.to_string()),
        )?;
        if a.shard.is_some() {
            // Shards share one global load.
            differ("--rate", format!("{:?}", a.rate), format!("{:?}", b.rate))?;
            differ(
                "--connections",
                a.connections.to_string(),
                b.connections.to_string(),
            )?;
        }
    }
    if let Some(shard) = a.shard {
        let mut seen = vec![0u32; shard.count as usize];
        for r in results {
            seen[r.load.shard.expect("checked above").index as usize] += 1;
        }
        let missing: Vec<String> = (0..shard.count)
            .filter(|&k| seen[k as usize] == 0)
            .map(|k| format!("{k}/{}", shard.count))
            .collect();
        let twice: Vec<String> = (0..shard.count)
            .filter(|&k| seen[k as usize] > 1)
            .map(|k| format!("{k}/{}", shard.count))
            .collect();
        anyhow::ensure!(
            twice.is_empty(),
            "shard {} is there more than once",
            twice.join(", ")
        );
        anyhow::ensure!(
            missing.is_empty(),
            "shard {} is missing: the merged result would not be the whole load",
            missing.join(", ")
        );
    }
    let mut starts = Vec::new();
    for r in results {
        let window = r.summary.window.with_context(|| {
            format!(
                "{} records no measured window (an older loadgen made it): its time cannot be \
                 checked; rerun it, or merge with --window-tolerance inf",
                r.label
            )
        });
        match window {
            Ok(w) => starts.push((w.start_unix_secs, r)),
            Err(e) if tolerance_secs.is_finite() => return Err(e),
            Err(_) => {}
        }
    }
    if let (Some(early), Some(late)) = (
        starts.iter().min_by(|x, y| x.0.total_cmp(&y.0)),
        starts.iter().max_by(|x, y| x.0.total_cmp(&y.0)),
    ) {
        let apart = late.0 - early.0;
        anyhow::ensure!(
            apart <= tolerance_secs,
            "the measured windows of {} and {} start {apart:.3} s apart, more than the tolerance \
             of {tolerance_secs} s: they were not run together (start shards with one --start-at)",
            early.1.label,
            late.1.label
        );
    }
    Ok(())
}

/// HdrHistogram's percentile-distribution text, as its plotting tools read it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:2.12} {:10} {:14.2}",
                v.count_since_last_iteration(),
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(
                out,
                "{value:12.3} {q:2.12} {:10}",
                v.count_since_last_iteration()
            );
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        // HdrHistogram's sub-bucket count: the power of two above 2·10^digits.
        1u64 << (2.0 * 10f64.powi(h.sigfig() as i32)).log2().ceil() as u32
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_with(values: &[u64], messages: u64) -> RunResult {
        crate::test_result(values, messages)
    }

    fn busy(cpu_secs: f64) -> Option<ServerProcess> {
        Some(ServerProcess {
            user_secs: cpu_secs / 2.0,
            system_secs: cpu_secs / 2.0,
            ..ServerProcess::default()
        })
    }

    #[test]
    fn a_saturated_loadgen_beside_an_idle_server_is_flagged() {
        let mut s = result_with(&[10, 20], 2).summary;
        s.duration_secs = 10.0;
        // loadgen at 98 % of its core, the server at 70 %: loadgen was measured.
        (s.loadgen_process, s.server_process) = (busy(9.8), busy(7.0));
        let warning = s.bottleneck_warning(1, true).expect("flagged");
        assert!(
            warning.contains("98 %") && warning.contains("70 %"),
            "{warning}"
        );
        // The server at its core: a true maximum, whatever loadgen used.
        s.server_process = busy(9.7);
        assert_eq!(s.bottleneck_warning(1, true), None);
        // Two load threads at half their cores each: not saturated.
        (s.loadgen_process, s.server_process) = (busy(10.0), busy(7.0));
        assert_eq!(s.bottleneck_warning(2, true), None);
        // At a constant rate a busy loadgen is fine while its sends are on time,
        // and flagged once they are late.
        (s.loadgen_process, s.server_process) = (busy(9.8), busy(5.0));
        s.send_lag_us = Some(Percentiles {
            p99: 20,
            ..Percentiles::default()
        });
        assert_eq!(s.bottleneck_warning(1, false), None);
        s.send_lag_us = Some(Percentiles {
            p99: 5000,
            ..Percentiles::default()
        });
        assert!(s
            .bottleneck_warning(1, false)
            .unwrap()
            .contains("sends were late"));
        // Without --server-pid a saturated loadgen still says so.
        s.server_process = None;
        assert!(s
            .bottleneck_warning(1, false)
            .unwrap()
            .contains("cannot tell"));
    }

    #[test]
    fn a_result_survives_a_round_trip_through_its_file() {
        let result = result_with(&[10, 20, 30, 5000], 4);
        let dir = std::env::temp_dir().join(format!("loadgen-result-{}", std::process::id()));
        let path = dir.join("r.json");
        result.save(&path).unwrap();
        let back = RunResult::load(&path).unwrap();
        assert_eq!(back.summary, result.summary);
        assert_eq!(back.load, result.load);
        assert_eq!(back.latency().unwrap(), result.latency().unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merged_percentiles_equal_those_of_one_histogram_holding_all_values() {
        let a: Vec<u64> = (1..=5000).map(|i| i * 3).collect();
        let b: Vec<u64> = (1..=3000).map(|i| 100_000 + i * 17).collect();
        let merged =
            RunResult::merge(&[result_with(&a, 5000), result_with(&b, 3000)], 1.0).unwrap();
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let together = result_with(&all, 8000);
        assert_eq!(merged.summary.latency_us, together.summary.latency_us);
        assert_eq!(merged.summary.messages, 8000);
        assert_eq!(merged.summary.msgs_per_sec, 8000.0);
        assert_eq!(merged.load.connections, 2 * crate::test_load().connections);
        assert_eq!(merged.summary.merged_from, 2);
    }

    fn shard(values: &[u64], index: u32, count: u32, start: f64) -> RunResult {
        let mut r = result_with(values, values.len() as u64);
        r.load.shard = Some(crate::options::Shard { index, count });
        r.load.rate = Some(3000.0);
        r.machine.host = format!("host{index}");
        r.summary.window = Some(Window {
            start_unix_secs: start,
            end_unix_secs: start + 1.0,
        });
        r
    }

    #[test]
    fn shards_merge_into_the_global_load_with_each_part_kept() {
        let mut parts = [
            shard(&[10, 20], 0, 3, 1e9),
            shard(&[30], 1, 3, 1e9 + 0.2),
            shard(&[40, 50, 60], 2, 3, 1e9 + 0.1),
        ];
        // Their seconds: the first shard's two, the others' one each.
        let second = |values: &[u64], n: f64| {
            let mut h = new_histogram();
            values.iter().for_each(|&v| h.record(v).unwrap());
            Interval::new(n, 1.0, &h)
        };
        parts[0].intervals = vec![second(&[10], 0.0), second(&[20], 1.0)];
        parts[1].intervals = vec![second(&[30], 0.0)];
        parts[2].intervals = vec![second(&[40, 50], 0.0), second(&[60], 1.0)];
        let merged = RunResult::merge(&parts, 1.0).unwrap();
        assert_eq!(merged.summary.messages, 6);
        let seconds: Vec<(u64, u64)> = merged
            .intervals
            .iter()
            .map(|i| (i.messages, i.latency().unwrap().max()))
            .collect();
        assert_eq!(
            seconds,
            [(4, 50), (2, 60)],
            "second by second, every host's"
        );
        // The shards carried the global load: it is not added up again.
        assert_eq!(merged.load.rate, Some(3000.0));
        assert_eq!(merged.load.connections, crate::test_load().connections);
        assert_eq!(merged.load.shard, None);
        let hosts: Vec<&str> = merged.parts.iter().map(|p| p.host.as_str()).collect();
        assert_eq!(hosts, ["host0", "host1", "host2"]);
        assert_eq!(merged.parts[1].summary.messages, 1);
        let window = merged.summary.window.unwrap();
        assert_eq!(
            (window.start_unix_secs, window.end_unix_secs),
            (1e9, 1e9 + 1.2)
        );
    }

    #[test]
    fn a_merge_of_what_was_not_one_load_at_one_time_is_refused() {
        let refused = |parts: &[RunResult], tolerance: f64| {
            RunResult::merge(parts, tolerance).unwrap_err().to_string()
        };
        let (a, b, c) = (
            shard(&[1], 0, 3, 1e9),
            shard(&[2], 1, 3, 1e9),
            shard(&[3], 2, 3, 1e9),
        );
        let missing = refused(&[a.clone(), c.clone()], 1.0);
        assert!(missing.contains("shard 1/3 is missing"), "{missing}");
        let twice = refused(&[a.clone(), b.clone(), b.clone(), c.clone()], 1.0);
        assert!(
            twice.contains("shard 1/3 is there more than once"),
            "{twice}"
        );
        let mut other_size = b.clone();
        other_size.load.size = 1024;
        let size = refused(&[a.clone(), other_size, c.clone()], 1.0);
        assert!(
            size.contains("--size is 20 in the first (shard 0/3) and 1024"),
            "{size}"
        );
        let mut other_rate = b.clone();
        other_rate.load.rate = Some(10.0);
        let rate = refused(&[a.clone(), other_rate, c.clone()], 1.0);
        assert!(rate.contains("--rate"), "{rate}");
        let late = shard(&[2], 1, 3, 1e9 + 5.0);
        let apart = refused(&[a.clone(), late.clone(), c.clone()], 1.0);
        assert!(apart.contains("start 5.000 s apart"), "{apart}");
        // A wider tolerance lets them through; a result without a window
        // passes only when windows are not checked.
        assert!(RunResult::merge(&[a.clone(), late, c.clone()], 10.0).is_ok());
        let mut old = b.clone();
        old.summary.window = None;
        let no_window = refused(&[a.clone(), old.clone(), c.clone()], 1.0);
        assert!(
            no_window.contains("records no measured window"),
            "{no_window}"
        );
        assert!(RunResult::merge(&[a, old, c], f64::INFINITY).is_ok());
    }

    #[test]
    fn hgrm_ends_at_the_maximum_with_its_footer() {
        let result = result_with(&[100, 200, 300, 400, 10_000], 5);
        let text = hgrm(&result.latency().unwrap());
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(last_row.contains("1.000000000000"), "{last_row}");
        // 10 000 lies in a bucket whose highest equivalent value is 10 007.
        assert!(last_row.trim_start().starts_with("10007.000"), "{last_row}");
        assert!(
            text.contains("#[Max     =    10007.000, Total count    =            5]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn other_files_are_refused_with_a_clear_message() {
        let dir = std::env::temp_dir().join(format!("loadgen-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.json");
        std::fs::write(&path, "{\"hello\": 1}").unwrap();
        let err = RunResult::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a loadgen result file"), "{err}");
        // A pod's log: the result on its own line among others.
        let line = serde_json::to_string(&crate::test_result(&[5, 7], 2)).unwrap();
        std::fs::write(&path, format!("starting\n{line}\nWARNING: x\n")).unwrap();
        assert_eq!(RunResult::load(&path).unwrap().summary.messages, 2);
        std::fs::write(&path, format!("{line}\n{line}\n")).unwrap();
        let err = RunResult::load(&path).unwrap_err().to_string();
        assert!(err.contains("more than one loadgen result"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

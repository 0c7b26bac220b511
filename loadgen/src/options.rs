//! Every loadgen option, its default and its check.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "WebSocket echo load generator: closed loop or constant rate, every echo checked, latency in HdrHistogram",
    long_about = "WebSocket echo load generator.\n\n\
        `run` loads any WebSocket echo server (closed loop, or constant rate with coordinated-omission \
        correction), checks every echo byte for byte and saves a result file with its full \
        configuration; `compare`, `plot` and `merge` work on result files."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a load against a WebSocket echo server.
    Run(RunArgs),
    /// One table of several result files, ratios against the first.
    Compare {
        /// Result files (JSON, from `run --out`); the first is the baseline.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Gate on the baseline: exit with status 3 when any other file is
        /// worse than the first by more than this share (5% or 0.05) in
        /// one of the --regression-in figures. [default: no gate]
        #[arg(long, value_name = "SHARE", value_parser = parse_share)]
        max_regression: Option<f64>,
        /// The figures --max-regression looks at: msgs/s (lower is worse),
        /// p50, p90, p99, p99.9, p99.99, max (higher is worse).
        #[arg(
            long,
            value_name = "LIST",
            value_delimiter = ',',
            default_value = "msgs/s,p99"
        )]
        regression_in: Vec<String>,
    },
    /// Latency percentiles and throughput of several result files, as SVG.
    Plot {
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The SVG to write.
        #[arg(short, long, value_name = "FILE.svg")]
        output: PathBuf,
    },
    /// Hold many connections with pings and a little echo load, churn them,
    /// close them, and watch the server's memory and connection count.
    Soak(SoakArgs),
    /// One load over several hosts: starts `run --shard K/N` on each
    /// through a launcher (ssh by default) with a common start, collects
    /// the shards' results and merges them. A failed or late shard is
    /// reported, and nothing is merged without it.
    Cluster(ClusterArgs),
    /// Find the knee: the highest rate the server sustains within limits.
    /// Paced runs step the rate up (doubling, then bisecting) until a limit
    /// (--max-p99 and the others) breaks or the echoes fall behind the
    /// offered rate; reports the highest rate that held, with its latency,
    /// and can draw latency against the offered rate.
    Knee(KneeArgs),
    /// Add up runs made at the same time from several processes or hosts:
    /// the shards of one load (run --shard K/N), or separate loads on one
    /// server. Refuses results that were not one load at one time.
    Merge {
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The merged result file to write.
        #[arg(short, long, value_name = "FILE.json")]
        output: PathBuf,
        /// How far apart (seconds) the parts' measured windows may start;
        /// `inf` also accepts results that recorded no window.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WINDOW_TOLERANCE_SECS)]
        window_tolerance: f64,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadConfig,
    /// Write the result (configuration, summary and histograms) to this
    /// JSON file; `-` writes it to standard output, and the table to
    /// standard error.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Write HdrHistogram's percentile-distribution text (microseconds) to this file.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write the run second by second as an HdrHistogram interval log
    /// (values in microseconds, time from the start of the warm-up), which
    /// HdrHistogram's own tools read: HistogramLogProcessor, the Python
    /// and Go ports. The result file holds the same histograms.
    #[arg(long, value_name = "FILE.hlog")]
    pub hlog: Option<PathBuf>,
    /// No live line, only the final table.
    #[arg(long)]
    pub quiet: bool,
    /// A name for this run in tables and plots. [default: derived from the load]
    #[arg(long)]
    pub label: Option<String>,

    #[command(flatten)]
    pub limits: Limits,

    /// When the warm-up starts, on the wall clock: RFC 3339
    /// (2026-12-01T15:00:00Z) or +SECS from now. Shards on several hosts
    /// given the same instant start together and measure the same window;
    /// connections are opened before it, and a run that is not connected
    /// by then fails. Needs synchronised clocks (NTP) across hosts.
    /// [default: as soon as the connections are open]
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,

    /// Process ID of the server, when it runs on this machine: its CPU time
    /// (user and system, from /proc/PID/stat) and resident memory over the
    /// measured window go into the result as CPU seconds per million
    /// messages. Without it, a server that reports its own process figures
    /// in `/stats` (ringecho does) is read there, at the start and the end
    /// of the window, from any host. [default: from the server's /stats
    /// where it has them, else not measured]
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub load: LoadConfig,

    /// The load hosts, comma-separated: the K-th runs shard K of N, with
    /// its share of the global --connections and --rate.
    #[arg(long, value_name = "H1,H2…", value_delimiter = ',', required = true)]
    pub hosts: Vec<String>,

    /// How to run a command on a host. `{host}` becomes the host's name.
    /// Where `{command}` appears, the loadgen command goes there as one
    /// shell-quoted string (for launchers such as ssh that hand it to a
    /// shell); otherwise its words are appended as separate arguments (for
    /// launchers that execute it directly, such as `ip netns exec {host}`
    /// or `kubectl exec {host} --`). The template itself is split into
    /// words as a shell would.
    #[arg(long, value_name = "TEMPLATE", default_value = DEFAULT_LAUNCHER)]
    pub launcher: String,

    /// loadgen's path on the load hosts; nothing is copied there.
    /// [default: this loadgen's own path, for hosts installed alike]
    #[arg(long, value_name = "PATH")]
    pub loadgen: Option<String>,

    /// Seconds from now to the common start: time enough for every host to
    /// start loadgen and open its connections. A shard not connected by
    /// then fails, and says so.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = positive_secs)]
    pub start_in: f64,

    /// Seconds a shard may take, after the end of the measured window, to
    /// deliver its result before it counts as late and is stopped.
    #[arg(long, value_name = "SECS", default_value_t = 15.0, value_parser = positive_secs)]
    pub grace: f64,

    /// Write the merged result to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,

    /// Write each shard's own result here, as shard-K-of-N.json (also when
    /// a shard failed, so that the others can be looked at).
    #[arg(long, value_name = "DIR")]
    pub parts: Option<PathBuf>,

    /// A name for the merged result. [default: derived from the load]
    #[arg(long)]
    pub label: Option<String>,

    /// How far apart (seconds) the shards' measured windows may start.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WINDOW_TOLERANCE_SECS)]
    pub window_tolerance: f64,

    /// Limits judged on the merged result (the shards are not given them).
    #[command(flatten)]
    pub limits: Limits,

    /// Print the command each host would run, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `loadgen soak`'s options.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// WebSocket URL of the echo server (ws:// only).
    #[arg(long, value_name = "ws://HOST:PORT/PATH")]
    pub url: String,
    /// Connections held open at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub connections: usize,
    /// Local addresses to spread connections over, comma-separated.
    #[arg(long, value_name = "A,B…", value_delimiter = ',')]
    pub source_addr: Vec<IpAddr>,
    /// Seconds to hold every connection, a tenth of them echoing.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub hold: u64,
    /// Seconds of churn after the hold.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub churn: u64,
    /// Connections closed and reopened per second during the churn.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub churn_rate: usize,
    /// The server's process id, to sample its resident memory.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Write the stages as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<std::path::PathBuf>,
}

/// The bytes at the front of every broadcast payload (`broadcast` writes
/// and reads them): --size cannot be less.
pub const BROADCAST_HEADER: usize = 24;

/// How far apart the measured windows of merged results may start, unless
/// `merge --window-tolerance` says otherwise.
pub const DEFAULT_WINDOW_TOLERANCE_SECS: f64 = 1.0;

pub const DEFAULT_LAUNCHER: &str = "ssh -o BatchMode=yes {host} {command}";

impl ClusterArgs {
    pub fn validate(&self) -> Result<(), String> {
        if self.load.shard.is_some() {
            return Err("cluster gives each host its shard: leave out --shard".into());
        }
        if self.hosts.iter().any(|h| h.trim().is_empty()) {
            return Err("--hosts has an empty name".into());
        }
        let mut load = self.load.clone();
        load.shard = Some(Shard {
            index: 0,
            count: self.hosts.len() as u32,
        });
        load.validate()?;
        match shlex::split(&self.launcher) {
            Some(words) if !words.is_empty() => Ok(()),
            _ => Err(format!(
                "--launcher {:?} is not a command line (empty, or unbalanced quotes?)",
                self.launcher
            )),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct KneeArgs {
    /// The load at each step; --rate is the first step's rate
    /// [default: 1000], --duration and --warmup each step's.
    #[command(flatten)]
    pub load: LoadConfig,

    /// What "sustained" means: each step must keep these, and its echoes
    /// must keep up with at least 95 % of the offered rate. At least one
    /// latency limit (--max-p50, --max-p99, --max-p99.9) is needed.
    #[command(flatten)]
    pub limits: Limits,

    /// Stop bisecting when the highest rate that held and the lowest that
    /// broke are this close (a share of the first).
    #[arg(long, value_name = "SHARE", default_value = "5%", value_parser = parse_share)]
    pub precision: f64,

    /// At most this many steps.
    #[arg(long, value_name = "N", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_steps: u32,

    /// Write every step's result, and the knee, to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,

    /// Draw p50, p99 and p99.9 against the offered rate (the
    /// latency–throughput curve) into this SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Process ID of the server, when it runs on this machine (see `run`).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// No live line; a line per step and the final table.
    #[arg(long)]
    pub quiet: bool,
}

/// The first step's rate when `knee` is given no --rate.
pub const DEFAULT_KNEE_START_RATE: f64 = 1000.0;

/// Pass/fail limits on a run, for gating CI on it: a run that breaks one
/// says which and exits with status 3 (see `EXIT_LIMIT_BROKEN`).
#[derive(Args, Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Fail the run when its median latency is above this (e.g. 500us,
    /// 1.5ms, 2s; a bare number is microseconds). [default: no limit]
    #[arg(long, value_name = "TIME", value_parser = parse_micros)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p50: Option<u64>,
    /// Fail the run when its 99th-percentile latency is above this.
    /// [default: no limit]
    #[arg(long, value_name = "TIME", value_parser = parse_micros)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<u64>,
    /// Fail the run when its 99.9th-percentile latency is above this.
    /// [default: no limit]
    #[arg(long = "max-p99.9", value_name = "TIME", value_parser = parse_micros)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p999: Option<u64>,
    /// Fail the run when fewer echoes than this came back per second.
    /// [default: no limit]
    #[arg(long, value_name = "MSGS/S")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rate: Option<f64>,
    /// Tolerate up to this many errors (mismatched echoes, unexpected
    /// frames or closes, failed connections, unanswered messages); more
    /// fail the run with status 3. [default: any error fails the run, with
    /// status 1: it measured nothing]
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<u64>,
    /// Fail the run when errors are more than this share of the messages
    /// (0.1% or 0.001). Setting it tolerates errors below it, as
    /// --max-errors does. [default: no limit]
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        *self != Limits::default()
    }

    /// Whether errors are judged by a limit rather than failing the run.
    pub fn tolerate_errors(&self) -> bool {
        self.max_errors.is_some() || self.max_error_rate.is_some()
    }
}

/// The exit status of a run (or `compare`) that broke a limit; 1 is a run
/// that failed or saw errors it did not tolerate, 2 a bad command line.
pub const EXIT_LIMIT_BROKEN: u8 = 3;

/// The handshake headers loadgen writes itself, which --header may not set.
const OWN_HEADERS: [&str; 8] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "origin",
];

/// "Name: value", with a header name and no line breaks.
pub fn parse_header(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a header: give \"Name: value\""))?;
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("the value of {name} has a line break"));
    }
    if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{name} is loadgen's own to send{}",
            match name.to_ascii_lowercase().as_str() {
                "origin" => ": use --origin",
                "sec-websocket-protocol" => ": use --subprotocol",
                "sec-websocket-extensions" => ": use --deflate",
                _ => "",
            }
        ));
    }
    Ok(format!("{name}: {}", value.trim()))
}

/// Result files keep a header's name, not its value (tokens stay out).
fn header_names<S: serde::Serializer>(headers: &[String], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(headers.len()))?;
    for header in headers {
        let name = header.split_once(':').map_or(header.as_str(), |(n, _)| n);
        seq.serialize_element(&format!("{name}: (not recorded)"))?;
    }
    seq.end()
}

/// "500us", "1.5ms", "2s" or a bare number of microseconds, as µs.
pub fn parse_micros(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" | "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return Err(format!("{s:?}: give a time such as 500us, 1.5ms or 2s")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: give a time such as 500us, 1.5ms or 2s"))?;
    Ok((value * factor).round() as u64)
}

/// "0.1%" or "0.001", as a fraction.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (t, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v / scale),
        _ => Err(format!("{s:?}: give a share such as 5%, 0.1% or 0.001")),
    }
}

/// The load, as recorded in every result file.
#[derive(Args, Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadConfig {
    /// WebSocket URL of the echo server: ws://, or wss:// (TLS, through
    /// rustls; the epoll client, see --io; certificates checked against the
    /// Mozilla roots built in, or --ca, or not at all with --insecure).
    #[arg(long, value_name = "ws[s]://HOST:PORT/PATH")]
    pub url: String,

    /// wss://: take any certificate the server shows (self-signed test
    /// certificates); the handshake is still encrypted. [default: checked]
    #[arg(long, conflicts_with = "ca")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,

    /// wss://: trust the CA certificates in this PEM file instead of the
    /// built-in Mozilla roots (a private or test CA that signed the
    /// server's certificate). [default: the built-in roots]
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,

    /// Concurrent connections.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Payload bytes per message; with --payload-file, the length of the
    /// slices the file is cycled in. [default: 20; with --payload-file, the
    /// whole file]
    #[arg(long = "size", value_name = "BYTES")]
    #[serde(skip)]
    pub size_given: Option<usize>,

    /// Payload bytes per message, once [`LoadConfig::normalize`] has folded
    /// `--size` (or the file's length, or the default) into it.
    #[arg(skip = SIZE_UNSET)]
    pub size: usize,

    /// Message type.
    #[arg(long = "type", value_enum, default_value_t = MessageType::Binary)]
    pub message_type: MessageType,

    /// Send text messages (short for --type text).
    #[arg(long, conflicts_with_all = ["binary", "message_type"])]
    #[serde(skip)]
    pub text: bool,

    /// Send binary messages (short for --type binary; the default).
    #[arg(long, conflicts_with = "message_type")]
    #[serde(skip)]
    pub binary: bool,

    /// Measured seconds, after the warm-up.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_secs)]
    pub duration: f64,

    /// Seconds of load before measuring (connections open, caches warm).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,

    /// Load-generator threads, each with its share of the connections.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,

    /// Do not pin load-generator threads to cores.
    #[arg(long)]
    pub no_pin: bool,

    /// Cores to pin the threads to, comma-separated.
    /// [default: the last N cores this process may run on, leaving the first ones to the server]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cores: Vec<usize>,

    /// Local addresses to spread connections over, comma-separated
    /// (e.g. 127.0.0.2,127.0.0.3), so that many connections do not run out
    /// of ephemeral ports. [default: chosen by the kernel]
    #[arg(long, value_name = "A,B…", value_delimiter = ',')]
    pub source_addr: Vec<IpAddr>,

    /// Protocol spoken over the WebSocket.
    #[arg(long, value_enum, default_value_t = Protocol::Raw)]
    pub protocol: Protocol,

    /// The hub protocol's encoding, with --protocol hub: `json` records in
    /// text frames (the payload a JSON string), or `messagepack` messages
    /// in binary frames (the payload MessagePack bytes, or a string with
    /// --text), as the official client's MessagePackHubProtocol sends them.
    #[arg(long, value_enum, value_name = "ENCODING", default_value_t = HubEncoding::Json)]
    #[serde(default, skip_serializing_if = "HubEncoding::is_json")]
    pub hub_encoding: HubEncoding,

    /// The hub transport, with --protocol hub: `websockets` (after
    /// negotiation, unless --skip-negotiation), or a fallback after
    /// negotiation, as the official client does it:
    /// `sse` (messages back on a Server-Sent Events stream, JSON only) or
    /// `longpolling` (messages back on polls); both send with POSTs, one at
    /// a time per connection. Fallbacks run on the epoll client.
    #[arg(long, value_enum, value_name = "TRANSPORT", default_value_t = HubTransport::Websockets)]
    #[serde(default, skip_serializing_if = "HubTransport::is_websockets")]
    pub transport: HubTransport,

    /// With --protocol hub over WebSockets: connect straight to the hub URL,
    /// as the official client's skipNegotiation, instead of first asking
    /// `POST …/negotiate?negotiateVersion=1` for a connection token and
    /// upgrading at `…?id=TOKEN`. Negotiation is part of connecting, never
    /// of the measured window.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_negotiation: bool,

    /// What the connections do: `echo` (each message comes back to its
    /// sender), or `broadcast`: --senders connections send, at --rate in
    /// all, messages the server delivers to every connection (the hub's
    /// SendToAll with --protocol hub; with raw, --url names the server's
    /// broadcast endpoint, such as ringecho's /broadcast). Every delivery
    /// is checked, its latency measured from when it was due, and missing
    /// or duplicated deliveries counted. Runs on the epoll client.
    #[arg(long, value_enum, default_value_t = Scenario::Echo)]
    #[serde(default, skip_serializing_if = "Scenario::is_echo")]
    pub scenario: Scenario,

    /// With --scenario broadcast: how many connections send (the first
    /// ones); every connection, senders included, receives.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(default = "one_sender", skip_serializing_if = "is_one_sender")]
    pub senders: u32,

    /// Closed loop: messages outstanding per connection (pipelining).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "rate")]
    pub in_flight: u32,

    /// How the connections do their I/O: io-uring (one completion-driven
    /// io_uring loop per thread), epoll (tokio, two tasks per connection), or
    /// auto: io-uring where the kernel allows it and the URL is ws://, else
    /// epoll (the one that speaks TLS). A result file records the one that ran.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    #[serde(default = "Io::before_the_loop")]
    pub io: Io,

    /// Constant rate: messages per second in total, sent on schedule whatever
    /// the server does; latency counts from the scheduled time.
    /// [default: closed loop]
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,

    /// Stages that ramp the rate, after the warm-up at --rate (0 if not
    /// given): each SECS:TARGET goes linearly from the rate before it to
    /// TARGET messages per second over SECS seconds (`10s:1000/s,30s:5000/s,
    /// 10s:0/s`; `0s:` jumps). The measured window is the stages, so
    /// --duration becomes their sum; every second is kept (see --hlog) to
    /// show where latency turned up. [default: one rate throughout]
    #[arg(long, value_name = "SECS:R,…", value_delimiter = ',', value_parser = RateStage::parse, conflicts_with = "in_flight")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<RateStage>,

    /// Stages that ramp how many connections send, closed loop: each
    /// SECS:N goes linearly from the count before it (0 at first) to N
    /// connections over SECS seconds (`0s:10,30s:1000,10s:100`; `0s:`
    /// jumps, and a first `0s:N` is also the warm-up's count). Connection
    /// i sends while the count is above i, and waits, still open, while it
    /// is not. All connections open before the start (opening under load
    /// is --connect-rate), so --connections becomes the peak, and
    /// --duration the stages' sum; every second is kept (see --hlog) to
    /// show at what count latency turned up. [default: every connection
    /// throughout]
    #[arg(long, value_name = "SECS:N,…", value_delimiter = ',', value_parser = ConnectionStage::parse, conflicts_with_all = ["rate", "stages"])]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_stages: Vec<ConnectionStage>,

    /// Constant rate, io-uring client: how many microseconds a due send may
    /// wait for a wake-up that a reply still on its way brings anyway,
    /// before the loop arms a timer of its own for it. Every timer armed and
    /// fired costs the load generator's core (about 14 µs on a virtual
    /// machine, as much as a message), so a little slack keeps loadgen
    /// cheaper than the server; a send with no reply pending gets its timer
    /// at its due time. How late each send actually left is recorded as the
    /// send lag either way. 0: a timer for every send.
    #[arg(long, value_name = "MICROS", default_value_t = DEFAULT_SEND_SLACK_US, requires = "rate")]
    #[serde(default)]
    pub send_slack_us: u32,

    /// Offer permessage-deflate (RFC 7692) and compress every message; each
    /// echo is inflated and checked. A server that declines the offer fails
    /// the run's connections. io-uring client only.
    #[arg(long)]
    #[serde(default)]
    pub deflate: bool,

    /// Open the connections at this rate (per second, over all threads and
    /// shards) instead of as fast as the server takes them: a connection
    /// storm at a known rate. The connect histogram is then the connect and
    /// handshake time at that rate; failures are counted by kind (refused,
    /// timeout, reset, HTTP status). [default: as fast as possible, a few
    /// hundred at a time]
    #[arg(long, value_name = "R")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_rate: Option<f64>,

    /// Send this Origin header in the opening handshake (servers that check
    /// origins refuse others with 403). [default: none]
    #[arg(long, value_name = "URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,

    /// An extra header for the opening handshake, "Name: value"
    /// (repeatable), such as an Authorization token. Result files record
    /// the names only, so that secrets stay out of them. [default: none]
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "header_names"
    )]
    pub headers: Vec<String>,

    /// Offer this subprotocol (repeatable, or comma-separated, in order of
    /// preference); the server must choose one of them, or the connection
    /// fails with the reason. [default: none offered]
    #[arg(long = "subprotocol", value_name = "NAME", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subprotocols: Vec<String>,

    /// Run one shard of a load spread over N hosts (or processes): this one
    /// opens connections K, K+N, K+2N, … of the global --connections and
    /// sends its share of the one global --rate schedule, so that N shards
    /// started together (--start-at) offer exactly the load of one process.
    /// K counts from 0. `merge` adds the shards' results exactly.
    /// [default: the whole load]
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,

    /// What the payload is made of: `random` bytes (letters for text), which
    /// DEFLATE cannot shrink; `words`, English-like text, which it shrinks
    /// to under half; or `utf8`, text of 1- to 4-byte characters (Latin,
    /// Cyrillic, CJK, emoji), valid UTF-8 at every --size, for servers
    /// that validate what they echo. Every message starts with its
    /// sequence number either way.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = PayloadKind::Random)]
    #[serde(default)]
    pub payload: PayloadKind,

    /// Send this file's bytes: each message the whole file, or with --size
    /// the file cycled in slices of that length (message k is bytes k·SIZE
    /// onwards, wrapping round). Echoes are still checked byte for byte
    /// (though identical messages cannot show their order). With --text
    /// the file must be UTF-8 and every slice must end on a character
    /// boundary. Raw protocol only; the file must exist on every host of
    /// a cluster. [default: generated, see --payload]
    #[arg(long, value_name = "FILE", conflicts_with = "payload")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_file: Option<std::path::PathBuf>,
}

/// Whether every slice of `size` bytes that `--payload-file` cycles `file`
/// in is whole UTF-8, as a text message must be. Slices start at every
/// multiple of gcd(size, file length) (message k at k·size, modulo the
/// length), so those must all be character boundaries.
pub fn text_slices_are_whole(file: &[u8], size: usize) -> Result<(), String> {
    let text = std::str::from_utf8(file).map_err(|e| {
        format!(
            "the file is not UTF-8 (byte {}); send it as binary",
            e.valid_up_to()
        )
    })?;
    if size == file.len() {
        return Ok(());
    }
    let (mut a, mut b) = (size, file.len());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    match (0..file.len())
        .step_by(a)
        .find(|&at| !text.is_char_boundary(at))
    {
        None => Ok(()),
        Some(at) => Err(format!(
            "{size}-byte slices would cut the character at byte {at}; \
             pick a --size that keeps characters whole, or send the whole file ({} bytes)",
            file.len()
        )),
    }
}

/// `size` before `normalize` decides it.
pub const SIZE_UNSET: usize = usize::MAX;
/// `--size`'s default, without --payload-file.
pub const DEFAULT_SIZE: usize = 20;
/// The largest --payload-file: its bytes are held in memory by each thread.
pub const MAX_PAYLOAD_FILE: u64 = 64 << 20;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Pseudo-random bytes (binary) or letters (text).
    #[default]
    Random,
    /// Words from a small vocabulary, separated by spaces.
    Words,
    /// Characters of 1 to 4 bytes in UTF-8.
    Utf8,
}

/// One stage of a ramped rate: to `target` messages per second over `secs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateStage {
    pub secs: f64,
    pub target: f64,
}

impl RateStage {
    pub fn parse(s: &str) -> Result<RateStage, String> {
        let bad = || format!("{s:?} is not a stage: give SECS:RATE, such as 30s:5000/s");
        let (time, rate) = s.trim().split_once(':').ok_or_else(bad)?;
        let time = time.trim();
        let secs = match time.strip_suffix("ms") {
            Some(ms) => ms.parse::<f64>().map(|v| v / 1e3),
            None => match time.strip_suffix('m') {
                Some(m) => m.parse::<f64>().map(|v| v * 60.0),
                None => time.strip_suffix('s').unwrap_or(time).parse::<f64>(),
            },
        }
        .map_err(|_| bad())?;
        let rate = rate.trim();
        let target: f64 = rate
            .strip_suffix("/s")
            .unwrap_or(rate)
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !(secs.is_finite() && secs >= 0.0 && target.is_finite() && target >= 0.0) {
            return Err(format!("{s:?}: seconds and rate are zero or more"));
        }
        Ok(RateStage { secs, target })
    }
}

impl std::fmt::Display for RateStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s:{}/s", self.secs, self.target)
    }
}

/// One stage of a ramped connection count: to `connections` sending over
/// `secs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStage {
    pub secs: f64,
    pub connections: u32,
}

impl ConnectionStage {
    pub fn parse(s: &str) -> Result<ConnectionStage, String> {
        let bad = || format!("{s:?} is not a stage: give SECS:CONNECTIONS, such as 30s:1000");
        if s.trim().ends_with("/s") {
            return Err(bad());
        }
        let stage = RateStage::parse(s).map_err(|_| bad())?;
        if stage.target.fract() != 0.0 || stage.target > u32::MAX as f64 {
            return Err(bad());
        }
        Ok(ConnectionStage {
            secs: stage.secs,
            connections: stage.target as u32,
        })
    }
}

impl std::fmt::Display for ConnectionStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s:{}", self.secs, self.connections)
    }
}

/// One shard of a load spread over several hosts: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?} is not K/N (shard K of N, counting from 0, e.g. 0/3)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: K must be below N (0/{count} to {}/{count})",
                count.max(1) - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--send-slack-us`'s default: under the 50 µs of send lag that a paced
/// run should stay within.
pub const DEFAULT_SEND_SLACK_US: u32 = 40;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Binary,
    Text,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Io {
    Auto,
    IoUring,
    Epoll,
}

impl Io {
    /// Result files written before `--io` existed ran on tokio.
    fn before_the_loop() -> Io {
        Io::Epoll
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HubEncoding {
    /// JSON records, as the official client sends by default.
    #[default]
    Json,
    /// MessagePack, SignalR's binary encoding.
    Messagepack,
}

impl HubEncoding {
    fn is_json(&self) -> bool {
        *self == HubEncoding::Json
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every message back to its sender.
    #[default]
    Echo,
    /// Every message to every connection.
    Broadcast,
}

impl Scenario {
    fn is_echo(&self) -> bool {
        *self == Scenario::Echo
    }
}

fn one_sender() -> u32 {
    1
}

fn is_one_sender(n: &u32) -> bool {
    *n == 1
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HubTransport {
    /// One WebSocket per connection.
    #[default]
    Websockets,
    /// Server-Sent Events for what the server sends, POSTs for the rest.
    Sse,
    /// Long polling for what the server sends, POSTs for the rest.
    Longpolling,
}

impl HubTransport {
    fn is_websockets(&self) -> bool {
        *self == HubTransport::Websockets
    }

    /// Whether it is one of the fallbacks (negotiated, over plain HTTP).
    pub fn is_fallback(self) -> bool {
        self != HubTransport::Websockets
    }

    /// The name negotiation uses.
    pub fn signalr_name(self) -> &'static str {
        match self {
            HubTransport::Websockets => "WebSockets",
            HubTransport::Sse => "ServerSentEvents",
            HubTransport::Longpolling => "LongPolling",
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Raw WebSocket messages.
    Raw,
    /// The SignalR JSON hub protocol: Echo invocations, latency measured to
    /// their completion; the payload is sent as a JSON string (text).
    Hub,
}

impl LoadConfig {
    /// The load the command line gives for `url` alone: every default, as
    /// `run --help` lists them, for code that builds a load and sets what
    /// it needs.
    pub fn with_defaults(url: &str) -> LoadConfig {
        #[derive(Parser)]
        struct Just {
            #[command(flatten)]
            load: LoadConfig,
        }
        let mut load = Just::try_parse_from(["loadgen", "--url", url])
            .expect("the defaults parse")
            .load;
        load.normalize();
        load
    }

    pub fn mode(&self) -> &'static str {
        if !self.stages.is_empty() {
            "staged-rate"
        } else if !self.connection_stages.is_empty() {
            "staged-connections"
        } else if self.rate.is_some() {
            "constant-rate"
        } else {
            "closed-loop"
        }
    }

    /// Folds the --text/--binary shorthands into `message_type`, and
    /// --size (or the payload file's length, or the default) into `size`.
    /// Idempotent.
    pub fn normalize(&mut self) {
        self.size = self.payload_size();
        self.size_given = None;
        // JSON hub payloads travel as JSON strings: text.
        let json_hub = self.protocol == Protocol::Hub && self.hub_encoding == HubEncoding::Json;
        if self.text || json_hub {
            self.message_type = MessageType::Text;
        }
        self.text = false;
        self.binary = false;
        // Stages pace the sends from --rate (0 by default), and measure
        // themselves.
        if !self.stages.is_empty() {
            self.rate = Some(self.rate.unwrap_or(0.0));
            self.duration = self.stages.iter().map(|s| s.secs).sum();
        }
        // Connection stages open their peak, and measure themselves.
        if !self.connection_stages.is_empty() {
            let peak = self.connection_stages.iter().map(|s| s.connections).max();
            self.connections = peak.unwrap_or(1).max(1);
            self.duration = self.connection_stages.iter().map(|s| s.secs).sum();
        }
    }

    /// The payload's length: --size, else the payload file's length (0
    /// when it cannot be read: validate() says why), else the default.
    pub fn payload_size(&self) -> usize {
        match (self.size_given, &self.payload_file) {
            (Some(size), _) => size,
            _ if self.size != SIZE_UNSET => self.size,
            (None, Some(file)) => std::fs::metadata(file).map_or(0, |m| m.len() as usize),
            (None, None) => DEFAULT_SIZE,
        }
    }

    /// Checks what clap cannot express; the message says what to do.
    pub fn validate(&self) -> Result<(), String> {
        let secure = self.url.starts_with("wss://");
        if !self.url.starts_with("ws://") && !secure {
            return Err(format!(
                "--url must start with ws:// or wss:// (got {:?})",
                self.url
            ));
        }
        if secure && self.io == Io::IoUring {
            return Err(
                "wss:// is spoken by the epoll client only: use --io epoll (or auto)".into(),
            );
        }
        if secure && self.deflate {
            return Err(
                "--deflate needs the io_uring client, which does not speak wss://; \
                 measure compression over ws://"
                    .into(),
            );
        }
        if !secure && (self.insecure || self.ca.is_some()) {
            return Err(format!(
                "--{} is for wss:// URLs, and --url is {:?}",
                if self.insecure { "insecure" } else { "ca" },
                self.url
            ));
        }
        if let Some(ca) = &self.ca {
            if !ca.is_file() {
                return Err(format!("--ca {}: no such file", ca.display()));
            }
        }
        if self.hub_encoding != HubEncoding::Json && self.protocol != Protocol::Hub {
            return Err("--hub-encoding is for --protocol hub".into());
        }
        if self.scenario == Scenario::Broadcast {
            let needs = |what: &str| Err(format!("--scenario broadcast {what}"));
            if self.rate.is_none() {
                return needs(
                    "sends at a constant rate: give --rate (messages sent per second, in all)",
                );
            }
            if self.senders > self.connections {
                return Err(format!(
                    "--senders {} exceeds --connections {}",
                    self.senders, self.connections
                ));
            }
            if self.payload_size() < BROADCAST_HEADER {
                return needs(&format!(
                    "needs --size {} or more (each payload says who sent it, and when)",
                    BROADCAST_HEADER
                ));
            }
            if self.io == Io::IoUring {
                return needs("runs on the epoll client: use --io epoll (or auto)");
            }
            if self.shard.is_some() || !self.connection_stages.is_empty() || !self.stages.is_empty()
            {
                return needs("runs in one process at one rate: leave out --shard and the stages");
            }
            if self.deflate || self.payload_file.is_some() {
                return needs(
                    "sends its own payloads, uncompressed: leave out --deflate and --payload-file",
                );
            }
        } else if self.senders != 1 {
            return Err("--senders is for --scenario broadcast".into());
        }
        if self.skip_negotiation && (self.protocol != Protocol::Hub || self.transport.is_fallback())
        {
            return Err(
                "--skip-negotiation is for --protocol hub over WebSockets (the fallbacks always negotiate)"
                    .into(),
            );
        }
        if self.transport.is_fallback() {
            if self.protocol != Protocol::Hub {
                return Err("--transport is for --protocol hub".into());
            }
            if self.io == Io::IoUring {
                return Err(format!(
                    "--transport {} runs on the epoll client: use --io epoll (or auto)",
                    self.transport.signalr_name()
                ));
            }
            if self.transport == HubTransport::Sse && self.hub_encoding != HubEncoding::Json {
                return Err(
                    "Server-Sent Events carry text only: use --hub-encoding json \
                     with --transport sse, or --transport longpolling"
                        .into(),
                );
            }
            if self.deflate {
                return Err("--deflate is a WebSocket extension: leave it out with --transport sse or longpolling".into());
            }
            if self.in_flight > 1 {
                return Err("a fallback transport sends one POST at a time: --in-flight 1".into());
            }
        }
        if let Some(file) = &self.payload_file {
            let len = std::fs::metadata(file)
                .map_err(|e| format!("--payload-file {}: {e}", file.display()))?
                .len();
            if len == 0 || len > MAX_PAYLOAD_FILE {
                return Err(format!(
                    "--payload-file {}: {len} bytes; give a file of 1 byte to {} MiB",
                    file.display(),
                    MAX_PAYLOAD_FILE >> 20
                ));
            }
            if self.protocol == Protocol::Hub {
                return Err(
                    "--payload-file sends raw WebSocket messages: leave out --protocol hub".into(),
                );
            }
            if self.payload_size() == 0 {
                return Err("--size must be at least 1 with --payload-file".into());
            }
            if self.text || self.message_type == MessageType::Text {
                let bytes = std::fs::read(file)
                    .map_err(|e| format!("--payload-file {}: {e}", file.display()))?;
                text_slices_are_whole(&bytes, self.payload_size()).map_err(|why| {
                    format!("--payload-file {} with --text: {why}", file.display())
                })?;
            }
        }
        if let Some(rate) = self.rate {
            // Stages may start from nothing.
            let least = if self.stages.is_empty() {
                f64::MIN_POSITIVE
            } else {
                0.0
            };
            if !(rate.is_finite() && rate >= least) {
                return Err("--rate must be a positive number of messages per second".into());
            }
        }
        if !self.connection_stages.is_empty() {
            if self.connection_stages.iter().map(|s| s.secs).sum::<f64>() <= 0.0 {
                return Err(
                    "--connection-stages: the stages last 0 s in all; give them time".into(),
                );
            }
            if self.connection_stages.iter().all(|s| s.connections == 0) {
                return Err("--connection-stages: no stage has a connection sending".into());
            }
        }
        if !self.stages.is_empty() && self.stages.iter().map(|s| s.secs).sum::<f64>() <= 0.0 {
            return Err("--stages: the stages last 0 s in all; give them time".into());
        }
        if let Some(rate) = self.connect_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(
                    "--connect-rate must be a positive number of connections per second".into(),
                );
            }
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return Err("--warmup must be zero or more seconds".into());
        }
        if let Some(shard) = self.shard {
            if self.connections < shard.count {
                return Err(format!(
                    "--shard {shard}: --connections {} gives some of the {} shards none; \
                     --connections is the global count, at least one per shard",
                    self.connections, shard.count
                ));
            }
        }
        if self.deflate && self.io == Io::Epoll {
            return Err(
                "--deflate is implemented by the io_uring client only: use --io io-uring (or auto)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The global connection numbers this process opens: all of them, or
    /// its shard's.
    pub fn own_connections(&self) -> Vec<u32> {
        let (first, step) = self.shard.map_or((0, 1), |s| (s.index, s.count));
        (first..self.connections).step_by(step as usize).collect()
    }

    /// The command-line arguments that give this load back (`run`'s
    /// options), for starting it elsewhere: `cluster` hands each host its
    /// shard this way. Defaults are written out too, so that a host with
    /// another loadgen's defaults runs the same load.
    pub fn to_args(&self) -> Vec<String> {
        fn name<T: ValueEnum>(v: &T) -> String {
            v.to_possible_value()
                .expect("no skipped values")
                .get_name()
                .to_string()
        }
        fn list<T: ToString>(items: &[T]) -> String {
            items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
        }
        let mut args: Vec<String> = vec![
            "--url".into(),
            self.url.clone(),
            "--connections".into(),
            self.connections.to_string(),
            "--size".into(),
            self.size_given.unwrap_or(self.size).to_string(),
            "--type".into(),
            name(&self.message_type),
            "--duration".into(),
            self.duration.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--threads".into(),
            self.threads.to_string(),
            "--protocol".into(),
            name(&self.protocol),
            "--io".into(),
            name(&self.io),
        ];
        if self.hub_encoding != HubEncoding::Json {
            args.extend(["--hub-encoding".into(), name(&self.hub_encoding)]);
        }
        if self.transport.is_fallback() {
            args.extend(["--transport".into(), name(&self.transport)]);
        }
        if self.skip_negotiation {
            args.push("--skip-negotiation".into());
        }
        if self.scenario == Scenario::Broadcast {
            args.extend(["--scenario".into(), name(&self.scenario)]);
            args.extend(["--senders".into(), self.senders.to_string()]);
        }
        if self.payload_file.is_none() {
            args.extend(["--payload".into(), name(&self.payload)]);
        }
        if self.no_pin {
            args.push("--no-pin".into());
        }
        if !self.cores.is_empty() {
            args.extend(["--cores".into(), list(&self.cores)]);
        }
        if !self.source_addr.is_empty() {
            args.extend(["--source-addr".into(), list(&self.source_addr)]);
        }
        match self.rate {
            Some(rate) => args.extend([
                "--rate".into(),
                rate.to_string(),
                "--send-slack-us".into(),
                self.send_slack_us.to_string(),
            ]),
            None => args.extend(["--in-flight".into(), self.in_flight.to_string()]),
        }
        if !self.stages.is_empty() {
            args.extend(["--stages".into(), list(&self.stages)]);
        }
        if !self.connection_stages.is_empty() {
            args.extend(["--connection-stages".into(), list(&self.connection_stages)]);
        }
        if let Some(rate) = self.connect_rate {
            args.extend(["--connect-rate".into(), rate.to_string()]);
        }
        if let Some(origin) = &self.origin {
            args.extend(["--origin".into(), origin.clone()]);
        }
        for header in &self.headers {
            args.extend(["--header".into(), header.clone()]);
        }
        if !self.subprotocols.is_empty() {
            args.extend(["--subprotocol".into(), self.subprotocols.join(",")]);
        }
        if self.deflate {
            args.push("--deflate".into());
        }
        if self.insecure {
            args.push("--insecure".into());
        }
        if let Some(file) = &self.payload_file {
            args.extend(["--payload-file".into(), file.display().to_string()]);
        }
        if let Some(ca) = &self.ca {
            args.extend(["--ca".into(), ca.display().to_string()]);
        }
        if let Some(shard) = self.shard {
            args.extend(["--shard".into(), shard.to_string()]);
        }
        args
    }

    pub fn default_label(&self) -> String {
        let mode = match self.rate {
            Some(rate) if !self.stages.is_empty() => {
                let targets: Vec<String> = std::iter::once(rate)
                    .chain(self.stages.iter().map(|s| s.target))
                    .map(|r| format!("{r}"))
                    .collect();
                format!("stages {} msg/s", targets.join("→"))
            }
            Some(rate) if self.scenario == Scenario::Broadcast => format!("{rate} sent/s"),
            Some(rate) => format!("{rate} msg/s"),
            None if !self.connection_stages.is_empty() => {
                let counts: Vec<String> = std::iter::once(0)
                    .chain(self.connection_stages.iter().map(|s| s.connections))
                    .map(|n| n.to_string())
                    .collect();
                format!("stages {} connections", counts.join("→"))
            }
            None if self.in_flight > 1 => format!("closed loop ×{}", self.in_flight),
            None => "closed loop".to_string(),
        };
        let protocol = match (self.protocol, self.hub_encoding, self.transport) {
            (Protocol::Raw, _, _) => "",
            (Protocol::Hub, HubEncoding::Json, HubTransport::Websockets) => "hub, ",
            (Protocol::Hub, HubEncoding::Messagepack, HubTransport::Websockets) => {
                "hub MessagePack, "
            }
            (Protocol::Hub, HubEncoding::Json, HubTransport::Sse) => "hub over SSE, ",
            (Protocol::Hub, HubEncoding::Json, HubTransport::Longpolling) => {
                "hub over long polling, "
            }
            (Protocol::Hub, HubEncoding::Messagepack, _) => "hub MessagePack over long polling, ",
        };
        let deflate = if self.deflate { "deflate, " } else { "" };
        let words = match (&self.payload_file, self.payload) {
            (Some(file), _) => format!(
                " of {}",
                file.file_name().unwrap_or_default().to_string_lossy()
            ),
            (None, PayloadKind::Random) => String::new(),
            (None, PayloadKind::Words) => " words".into(),
            (None, PayloadKind::Utf8) => " UTF-8".into(),
        };
        if self.scenario == Scenario::Broadcast {
            return format!(
                "{protocol}broadcast, {} of {} connections sending {} B{words}, {mode}",
                self.senders, self.connections, self.size
            );
        }
        format!(
            "{protocol}{deflate}{} × {} B{words}, {mode}",
            self.connections, self.size
        )
    }
}

/// `--start-at`: RFC 3339, or +SECS from now.
pub fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    if let Some(secs) = s.strip_prefix('+') {
        let secs = positive_secs(secs).or_else(|_| match secs.parse::<f64>() {
            Ok(0.0) => Ok(0.0),
            _ => Err(()),
        });
        return secs
            .map(|secs| std::time::SystemTime::now() + std::time::Duration::from_secs_f64(secs))
            .map_err(|_| format!("{s:?}: +SECS must be zero or more seconds"));
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither RFC 3339 (2026-12-01T15:00:00Z) nor +SECS: {e}"))
}

pub(crate) fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("must be a positive number of seconds".into()),
    }
}

/// Parses the command line of `program`: --help and --version print and exit
/// 0; a bad flag prints one line and exits 2, as both binaries promise.
pub fn parse_or_exit<T: Parser>(program: &str) -> Result<T, std::process::ExitCode> {
    match T::try_parse() {
        Ok(parsed) => Ok(parsed),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "{program}: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            Err(std::process::ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_transports_say_what_they_need() {
        let mut load = crate::test_load();
        load.transport = HubTransport::Sse;
        assert_eq!(
            load.validate().unwrap_err(),
            "--transport is for --protocol hub"
        );
        load.protocol = Protocol::Hub;
        assert!(load.validate().is_ok());
        load.hub_encoding = HubEncoding::Messagepack;
        assert!(load.validate().unwrap_err().contains("text only"));
        load.transport = HubTransport::Longpolling;
        assert!(load.validate().is_ok());
        load.io = Io::IoUring;
        assert!(load.validate().unwrap_err().contains("--io epoll"));
        load.io = Io::Auto;
        load.in_flight = 4;
        assert!(load.validate().unwrap_err().contains("--in-flight 1"));
        load.in_flight = 1;
        let args = load.to_args();
        let at = args.iter().position(|a| a == "--transport").unwrap();
        assert_eq!(args[at + 1], "longpolling");
    }

    #[test]
    fn a_load_written_as_arguments_reads_back_the_same() {
        #[derive(Parser)]
        struct Just {
            #[command(flatten)]
            load: LoadConfig,
        }
        let back = |load: &LoadConfig| {
            let mut parsed =
                Just::try_parse_from(std::iter::once("loadgen".to_string()).chain(load.to_args()))
                    .unwrap_or_else(|e| panic!("{e}"))
                    .load;
            parsed.normalize();
            parsed
        };
        let mut load = crate::test_load();
        assert_eq!(back(&load), load);
        load.message_type = MessageType::Text;
        load.duration = 2.5;
        load.warmup = 0.0;
        load.threads = 3;
        load.no_pin = true;
        load.cores = vec![1, 3];
        load.source_addr = vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
        load.io = Io::IoUring;
        load.rate = Some(1234.5);
        load.send_slack_us = 7;
        load.deflate = true;
        load.payload = PayloadKind::Words;
        load.shard = Some(Shard { index: 2, count: 5 });
        assert_eq!(back(&load), load);
        load.stages = vec![
            RateStage {
                secs: 1.5,
                target: 10.0,
            },
            RateStage {
                secs: 0.0,
                target: 0.0,
            },
        ];
        load.duration = 1.5;
        assert_eq!(back(&load), load);
        load.stages.clear();
        load.rate = None;
        load.send_slack_us = DEFAULT_SEND_SLACK_US;
        load.connection_stages = ["0s:10", "2.5s:40", "1s:0"]
            .map(|s| ConnectionStage::parse(s).unwrap())
            .to_vec();
        load.connections = 40;
        load.duration = 3.5;
        assert_eq!(back(&load), load);
        load.connection_stages.clear();
        load.rate = Some(1234.5);
        load.send_slack_us = 7;
        load.connect_rate = Some(250.0);
        load.origin = Some("https://example.com".into());
        load.headers = vec!["Authorization: Bearer a b".into(), "X-Run: 7".into()];
        load.subprotocols = vec!["chat".into(), "superchat".into()];
        assert_eq!(back(&load), load);
        // A payload file, cycled in slices of --size; and sent whole.
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        load.payload_file = Some(file.into());
        load.payload = PayloadKind::Random;
        load.size = 100;
        assert_eq!(back(&load), load);
        load.size = std::fs::metadata(file).unwrap().len() as usize;
        assert_eq!(back(&load), load);
        load.payload_file = None;
        let recorded = serde_json::to_value(&load).unwrap();
        assert_eq!(
            recorded["headers"],
            serde_json::json!(["Authorization: (not recorded)", "X-Run: (not recorded)"])
        );
        load.origin = None;
        load.connect_rate = None;
        load.headers.clear();
        load.subprotocols.clear();
        load.rate = None;
        load.send_slack_us = DEFAULT_SEND_SLACK_US;
        load.in_flight = 4;
        load.protocol = Protocol::Hub;
        assert_eq!(back(&load), load);
    }

    #[test]
    fn shards_split_the_connections_and_the_schedule_of_one_load() {
        let mut load = crate::test_load();
        load.connections = 10;
        let mut all: Vec<u32> = (0..3)
            .flat_map(|k| {
                load.shard = Some(Shard { index: k, count: 3 });
                load.own_connections()
            })
            .collect();
        load.shard = Some(Shard { index: 1, count: 3 });
        assert_eq!(load.own_connections(), [1, 4, 7]);
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<u32>>());
        assert!(Shard::parse("3/3")
            .unwrap_err()
            .contains("K must be below N"));
        assert!(Shard::parse("1").unwrap_err().contains("is not K/N"));
        assert_eq!(Shard::parse("2/5"), Ok(Shard { index: 2, count: 5 }));
        load.connections = 2;
        assert!(load
            .validate()
            .unwrap_err()
            .contains("gives some of the 3 shards none"));
    }

    #[test]
    fn stages_read_as_people_write_them_and_measure_themselves() {
        assert_eq!(
            RateStage::parse("30s:5000/s"),
            Ok(RateStage {
                secs: 30.0,
                target: 5000.0
            })
        );
        assert_eq!(
            RateStage::parse("500ms:0"),
            Ok(RateStage {
                secs: 0.5,
                target: 0.0
            })
        );
        assert_eq!(
            RateStage::parse("2m:10/s"),
            Ok(RateStage {
                secs: 120.0,
                target: 10.0
            })
        );
        assert!(RateStage::parse("fast").unwrap_err().contains("SECS:RATE"));
        assert!(RateStage::parse("-1s:5").is_err());
        let mut load = crate::test_load();
        load.stages = vec![
            RateStage::parse("10s:1000/s").unwrap(),
            RateStage::parse("5s:0/s").unwrap(),
        ];
        load.normalize();
        assert_eq!((load.rate, load.duration), (Some(0.0), 15.0));
        assert_eq!(load.mode(), "staged-rate");
        assert!(load.default_label().contains("stages 0→1000→0 msg/s"));
        assert_eq!(load.validate(), Ok(()));
        load.stages = vec![RateStage::parse("0s:1000/s").unwrap()];
        assert!(load.validate().unwrap_err().contains("0 s in all"));
    }

    #[test]
    fn headers_are_names_and_values_and_not_loadgens_own() {
        assert_eq!(parse_header("X-Token:  abc "), Ok("X-Token: abc".into()));
        assert!(parse_header("no colon")
            .unwrap_err()
            .contains("Name: value"));
        assert!(parse_header("Bad Name: x")
            .unwrap_err()
            .contains("not a header name"));
        assert!(parse_header("Origin: x").unwrap_err().contains("--origin"));
        assert!(parse_header("sec-websocket-key: x")
            .unwrap_err()
            .contains("loadgen's own"));
        assert!(parse_header("X: a\r\nEvil: b")
            .unwrap_err()
            .contains("line break"));
    }

    #[test]
    fn limits_read_times_and_shares_as_people_write_them() {
        assert_eq!(parse_micros("500us"), Ok(500));
        assert_eq!(parse_micros("500µs"), Ok(500));
        assert_eq!(parse_micros("1.5ms"), Ok(1500));
        assert_eq!(parse_micros("2s"), Ok(2_000_000));
        assert_eq!(parse_micros("250"), Ok(250));
        assert!(parse_micros("1h").unwrap_err().contains("such as 500us"));
        assert!(parse_micros("ms").is_err());
        assert_eq!(parse_share("5%"), Ok(0.05));
        assert_eq!(parse_share("0.001"), Ok(0.001));
        assert!(parse_share("-1%").is_err());
    }

    #[test]
    fn start_at_takes_rfc3339_or_seconds_from_now() {
        let at = parse_start_at("2026-12-01T15:00:00Z").unwrap();
        assert_eq!(
            at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_796_137_200
        );
        let soon = parse_start_at("+2.5").unwrap();
        let ahead = soon.duration_since(std::time::SystemTime::now()).unwrap();
        assert!(ahead.as_secs_f64() > 2.0 && ahead.as_secs_f64() <= 2.5);
        assert!(parse_start_at("tomorrow")
            .unwrap_err()
            .contains("neither RFC 3339"));
        assert!(parse_start_at("+-1").is_err());
    }
}

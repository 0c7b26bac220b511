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
        /// Result files (JSON, from `run --out`).
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
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
    Soak(crate::soak::SoakArgs),
    /// Add up runs made at the same time from several processes or hosts.
    Merge {
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The merged result file to write.
        #[arg(short, long, value_name = "FILE.json")]
        output: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadConfig,
    /// Write the result (configuration, summary and histograms) to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Write HdrHistogram's percentile-distribution text (microseconds) to this file.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// No live line, only the final table.
    #[arg(long)]
    pub quiet: bool,
    /// A name for this run in tables and plots. [default: derived from the load]
    #[arg(long)]
    pub label: Option<String>,

    /// Process ID of the server, when it runs on this machine: its CPU time
    /// (user and system, from /proc/PID/stat) and resident memory over the
    /// measured window go into the result as CPU seconds per million
    /// messages. [default: not measured]
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// The load, as recorded in every result file.
#[derive(Args, Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadConfig {
    /// WebSocket URL of the echo server (ws:// only).
    #[arg(long, value_name = "ws://HOST:PORT/PATH")]
    pub url: String,

    /// Concurrent connections.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 20)]
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

    /// Closed loop: messages outstanding per connection (pipelining).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "rate")]
    pub in_flight: u32,

    /// How the connections do their I/O: io-uring (one completion-driven
    /// io_uring loop per thread), epoll (tokio, two tasks per connection), or
    /// auto: io-uring where the kernel allows it, else epoll. A result file
    /// records the one that ran.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    #[serde(default = "Io::before_the_loop")]
    pub io: Io,

    /// Constant rate: messages per second in total, sent on schedule whatever
    /// the server does; latency counts from the scheduled time.
    /// [default: closed loop]
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,

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

    /// What the payload is made of: `random` bytes (letters for text), which
    /// DEFLATE cannot shrink, or `words`, English-like text, which it
    /// shrinks to under half.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = PayloadKind::Random)]
    #[serde(default)]
    pub payload: PayloadKind,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Pseudo-random bytes (binary) or letters (text).
    #[default]
    Random,
    /// Words from a small vocabulary, separated by spaces.
    Words,
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
    pub fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "constant-rate"
        } else {
            "closed-loop"
        }
    }

    /// Folds the --text/--binary shorthands into `message_type`.
    pub fn normalize(&mut self) {
        // Hub payloads travel as JSON strings: text.
        if self.text || self.protocol == Protocol::Hub {
            self.message_type = MessageType::Text;
        }
        self.text = false;
        self.binary = false;
    }

    /// Checks what clap cannot express; the message says what to do.
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.starts_with("ws://") {
            return Err(format!(
                "--url must start with ws:// (got {:?}; wss is not supported)",
                self.url
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number of messages per second".into());
            }
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return Err("--warmup must be zero or more seconds".into());
        }
        if self.deflate && self.io == Io::Epoll {
            return Err(
                "--deflate is implemented by the io_uring client only: use --io io-uring (or auto)"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn default_label(&self) -> String {
        let mode = match self.rate {
            Some(rate) => format!("{rate} msg/s"),
            None if self.in_flight > 1 => format!("closed loop ×{}", self.in_flight),
            None => "closed loop".to_string(),
        };
        let protocol = match self.protocol {
            Protocol::Raw => "",
            Protocol::Hub => "hub, ",
        };
        let deflate = if self.deflate { "deflate, " } else { "" };
        let words = match self.payload {
            PayloadKind::Random => "",
            PayloadKind::Words => " words",
        };
        format!(
            "{protocol}{deflate}{} × {} B{words}, {mode}",
            self.connections, self.size
        )
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
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

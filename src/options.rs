//! Every engine option, its default and its check: the one place where the
//! command line is defined. Other modules receive a validated [`Options`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::deflate;
use crate::startup;

/// The smallest receive buffer we accept: a control frame (14-byte header and
/// up to 125 bytes of payload) must always fit in one buffer, so that control
/// frames are answered in place without an assembly buffer.
pub const MIN_RECEIVE_BUFFER: usize = 256;
/// The largest receive buffer: beyond this, per-connection memory dominates
/// any gain from fewer reads.
pub const MAX_RECEIVE_BUFFER: usize = 64 << 20;

/// The command line: the engine's options, or `bench` and its own.
#[derive(Parser, Debug)]
#[command(
    name = "ringecho",
    version,
    args_conflicts_with_subcommands = true,
    about = "A thread-per-core io_uring WebSocket echo engine for benchmarking",
    long_about = "A thread-per-core io_uring WebSocket echo engine for benchmarking.\n\n\
        Without a subcommand the engine serves: one worker per core, each pinned, each with its own \
        reactor and its own SO_REUSEPORT listener. GET /ws (and an upgrade at /) echoes every message \
        with its type; GET / serves a test page, GET /stats the per-core counters as JSON, GET /healthz \
        answers 200. `ringecho bench` starts the engine itself and measures it.\n\n\
        Logging follows RUST_LOG (default: info)."
)]
pub struct Cli {
    #[command(flatten)]
    pub engine: Options,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the engine on a free port, run the standard benchmark cases
    /// against it with loadgen, print the comparison and write results/.
    Bench(BenchOptions),
}

/// `ringecho bench`: comma-separated engine options are swept, restarting
/// the engine for each combination, and the runs are put side by side.
#[derive(Args, Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Backends to measure, comma-separated (e.g. tokio-uring,epoll).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    pub backend: Vec<BackendChoice>,

    /// Receive buffer sizes to measure, comma-separated (e.g. 4096,16384,65536).
    #[arg(long, value_name = "BYTES,…", value_delimiter = ',', default_value = "4096", value_parser = parse_receive_buffer_size)]
    pub receive_buffer_size: Vec<usize>,

    /// Engine threads to measure, comma-separated. The engine takes the first
    /// cores and loadgen the rest. [default: half the cores, at least 1]
    #[arg(long, value_name = "N,…", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Vec<u16>,

    /// permessage-deflate modes to measure, comma-separated (off, shared,
    /// dedicated; see the engine's --deflate). With a mode other than off,
    /// loadgen offers deflate and compresses every message (--payload says
    /// what there is to compress).
    #[arg(
        long,
        value_enum,
        value_name = "MODE,…",
        value_delimiter = ',',
        default_value = "off"
    )]
    pub deflate: Vec<deflate::Mode>,

    /// What the payloads are made of: random (incompressible) or words
    /// (text that DEFLATE shrinks to under half).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = loadgen::options::PayloadKind::Random)]
    pub payload: loadgen::options::PayloadKind,

    /// Cases to run, comma-separated (the standard cases, README "The standard cases").
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "small,medium,large,fanin"
    )]
    pub cases: Vec<Case>,

    /// Closed-loop connections of a case instead of its standard count,
    /// comma-separated CASE=N (e.g. medium=30,large=30): where the
    /// standard count leaves the engine waiting between echoes, more
    /// connections keep its core busy, so that throughput is the engine's
    /// maximum. [default: the standard counts]
    #[arg(long, value_name = "CASE=N,…", value_delimiter = ',', value_parser = parse_case_connections)]
    pub connections: Vec<(Case, u32)>,

    /// Protocols to measure, comma-separated: raw WebSocket echo, and Echo
    /// invocations over the SignalR hub protocol (small, medium and large
    /// cases), set side by side in raw-vs-signalr.md.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "raw,hub")]
    pub protocol: Vec<loadgen::options::Protocol>,

    /// The hub's encodings to measure, comma-separated: SignalR's JSON (the
    /// payload a string) and MessagePack (the payload bytes, as the raw
    /// echo's are); each is set beside the raw echo in raw-vs-signalr.md.
    #[arg(
        long,
        value_enum,
        value_name = "ENCODING,…",
        value_delimiter = ',',
        default_value = "json,messagepack"
    )]
    pub hub_encoding: Vec<loadgen::options::HubEncoding>,

    /// The hub's transports to measure, comma-separated: websockets (in
    /// each --hub-encoding), and the fallbacks sse and longpolling (in JSON,
    /// the official client's default); each is set beside the raw echo in
    /// raw-vs-signalr.md.
    #[arg(
        long,
        value_enum,
        value_name = "TRANSPORT,…",
        value_delimiter = ',',
        default_value = "websockets,sse,longpolling"
    )]
    pub hub_transport: Vec<loadgen::options::HubTransport>,

    /// Broadcast runs: for each count, that many connections receive what
    /// four of them send: the engine's raw broadcast endpoint, and the
    /// hub's SendToAll over WebSockets in each --hub-encoding, at
    /// --broadcast-deliveries a second, 32 B payloads; set side by side in
    /// raw-vs-signalr.md. 0 skips them.
    #[arg(
        long,
        value_name = "N,…",
        value_delimiter = ',',
        default_value = "100,1000"
    )]
    pub broadcast_receivers: Vec<u32>,

    /// Deliveries a second each broadcast run asks for (messages sent a
    /// second × receivers): a constant load, to compare CPU per delivery
    /// (about a quarter of a core here); 0 skips the broadcast runs.
    #[arg(long, value_name = "N", default_value_t = 100000.0)]
    pub broadcast_deliveries: f64,

    /// Rounds of every closed-loop run, interleaved (raw then hub of a size,
    /// back to back): raw-vs-signalr.md reports the median ratio with its range.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,

    /// Measured seconds of each closed-loop case.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,

    /// Warm-up seconds before each measurement.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,

    /// Measured seconds of the constant-rate run (the first case at half its
    /// measured closed-loop throughput, for tail latency); 0 skips it.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub rate_duration: f64,

    /// The small case's knee: the highest rate whose p99 stays under this
    /// (as `loadgen knee --max-p99`), with its latency–throughput curve;
    /// 0 skips it.
    #[arg(long, value_name = "TIME", default_value = "1ms", value_parser = loadgen::options::parse_micros)]
    pub knee_p99: u64,

    /// Measured seconds of each knee step.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub knee_duration: f64,

    /// At most this many knee steps.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub knee_max_steps: u32,

    /// Connection storms: for each rate, --storm-connections connections
    /// opened at that many per second (as `loadgen run --connect-rate`)
    /// against an engine started with --max-connections --storm-limit, so
    /// that the last ones are refused with 503 as a full server refuses
    /// them. Each storm's result has the connect and handshake time at
    /// that rate, the rate achieved, and failures by kind; 0 skips them.
    #[arg(long, value_name = "PER_SEC,…", value_delimiter = ',', default_value = "1000,4000,16000", value_parser = parse_storm_rate)]
    pub storm_rate: Vec<f64>,

    /// Connections each storm opens.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub storm_connections: u32,

    /// The engine's --max-connections during the storms: connections beyond
    /// it get 503. [default: three quarters of --storm-connections]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub storm_limit: Option<u32>,

    /// Folder for result files, tables and plots.
    /// [default: results/bench/DATE]
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,

    /// No live line during each run.
    #[arg(long)]
    pub quiet: bool,
}

/// The standard cases (README, "The standard cases"), closed loop, binary.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Case {
    /// 100 connections × 20 B: per-message overhead.
    Small,
    /// 10 connections × 1 KiB: the typical chat or dashboard message.
    Medium,
    /// 10 connections × 16 KiB: copy and buffer costs.
    Large,
    /// 500 connections × 16 KiB: many busy connections on few cores.
    Fanin,
}

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Small => "small",
            Case::Medium => "medium",
            Case::Large => "large",
            Case::Fanin => "fanin",
        }
    }

    /// (connections, payload bytes)
    pub fn shape(self) -> (u32, usize) {
        match self {
            Case::Small => (100, 20),
            Case::Medium => (10, 1024),
            Case::Large => (10, 16 * 1024),
            Case::Fanin => (500, 16 * 1024),
        }
    }
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io-uring",
            BackendChoice::TokioUring => "tokio-uring",
            BackendChoice::Epoll => "epoll",
        }
    }
}

/// The engine's own options.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "ringecho")]
pub struct Options {
    /// Address to listen on. Port 0 picks a free port; the address actually
    /// bound is printed on the first line of output.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Form of that first line: `text` for people (ringecho listening on
    /// ADDR …) or `json`, one object with listen, ws_path, backend, threads,
    /// cores and receive_buffer_size, for scripts.
    #[arg(long, value_enum, value_name = "FORM", default_value_t = startup::Format::Text)]
    pub startup_line: startup::Format,

    /// Worker threads, each with its own reactor and listener.
    /// [default: the number of cores this process may run on]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Do not pin each worker thread to its own core.
    #[arg(long)]
    pub no_pin: bool,

    /// Let the kernel back the engine's memory with transparent huge pages
    /// where its THP mode allows. Off by default: the allocator asks for
    /// them on its arenas, and then a few live bytes keep whole 2 MiB pages
    /// resident and the kernel's collapsing decides what the engine seems
    /// to hold (one worker after a run: 24-26 MiB with them, 18.5 without;
    /// after the soak's 10 000 connections closed, 44 or 60 MiB from one run
    /// to the next). With them, CPU per message is about 1.5 % lower (5
    /// interleaved pairs: 1.4 % at a constant 40 000 msgs/s, 2.2 % closed
    /// loop).
    #[arg(long)]
    pub transparent_huge_pages: bool,

    /// I/O backend. `auto` uses io_uring when the kernel allows it and falls
    /// back to epoll with a warning otherwise.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// Path of the WebSocket echo endpoint (an upgrade request at / is echoed too).
    #[arg(long, value_name = "PATH", default_value = "/ws", value_parser = parse_path)]
    pub ws_path: String,

    /// Path of the raw broadcast endpoint: every message a connection sends
    /// there goes to every connection there, on every core (itself
    /// included), as it came; the raw counterpart of the hub's SendToAll.
    #[arg(long, value_name = "PATH", default_value = "/broadcast", value_parser = parse_path)]
    pub broadcast_path: String,

    /// Path of the SignalR JSON hub endpoint (negotiation at PATH/negotiate).
    #[arg(long, value_name = "PATH", default_value = "/hub", value_parser = parse_path)]
    pub hub_path: String,

    /// Seconds between the hub Ping messages sent to every hub connection
    /// (the official client gives up after 30 s of silence); 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub hub_keep_alive: u64,

    /// The hub transports negotiation offers, comma-separated, in the
    /// client's order of preference: websockets, server-sent-events,
    /// long-polling. Requests on a transport left out get 404.
    #[arg(
        long,
        value_enum,
        value_name = "TRANSPORT,…",
        value_delimiter = ',',
        default_value = "websockets,server-sent-events,long-polling"
    )]
    pub transports: Vec<Transport>,

    /// Seconds a long poll waits for hub messages before it is answered
    /// empty (ASP.NET Core's LongPolling.PollTimeout).
    #[arg(long, value_name = "SECS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_timeout: u64,

    /// Seconds a long-polling hub connection may go without a poll before
    /// it is closed (ASP.NET Core's DisconnectTimeout): a client whose
    /// poll never comes back does not hold its connection forever.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub disconnect_timeout: u64,

    /// Seconds between the ping frames sent to every connection so that
    /// proxies keep it open (ASP.NET Core's KeepAliveInterval); 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub keep_alive_interval: u64,

    /// Size in bytes of each receive buffer handed to the kernel (ASP.NET
    /// Core's ReceiveBufferSize). A message that fits is echoed from that
    /// buffer without a copy; larger messages are assembled.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_receive_buffer_size)]
    pub receive_buffer_size: usize,

    /// Origin allowed to open a WebSocket (repeatable). Requests whose Origin
    /// header is not listed get 403; requests without Origin are allowed.
    /// Origin is not authentication. [default: every origin]
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// io-uring backend only: send frames of at least this many bytes with
    /// zero-copy sends (IORING_OP_SEND_ZC; echoes from the provided buffers
    /// send them as registered buffers); 0 disables. Off by default: on
    /// loopback the kernel copies anyway and the notifications cost more than
    /// they save (results/send-zc.md).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub send_zc_min: usize,

    /// Close a connection from which nothing has arrived for this many
    /// seconds (close 1001, then TCP close); 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub client_timeout: u64,

    /// Largest message accepted, in bytes; larger ones are refused with close 1009.
    /// A compressed message is measured inflated.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = parse_max_message_size)]
    pub max_message_size: usize,

    /// permessage-deflate (RFC 7692): `off` declines every offer; `shared`
    /// accepts without context takeover, one compressor per worker and no
    /// compression memory per connection; `dedicated` keeps each
    /// connection's windows (about 290 KiB of contexts per connection at 15
    /// window bits, shown in /stats as deflate_context_bytes).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = deflate::Mode::Off)]
    pub deflate: deflate::Mode,

    /// Seconds to wait on SIGINT/SIGTERM for clients to answer close 1001
    /// before exiting.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub shutdown_timeout: u64,

    /// Open TCP connections allowed at once; beyond it new connections get
    /// 503 and are closed, existing ones are untouched.
    /// [default: the open-file limit less a reserve for listeners and logs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Output a connection may have waiting for a client that does not read
    /// (hub broadcasts); beyond it the connection is closed with 1008.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(65536..))]
    pub max_pending_bytes: u64,

    /// Seconds a client has to send complete HTTP request headers.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,
}

/// A SignalR transport: how a hub connection carries its messages.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// One WebSocket per hub connection, served by the core that accepted it.
    Websockets,
    /// Server-to-client messages on a text/event-stream GET, client-to-server
    /// on POSTs.
    ServerSentEvents,
    /// Server-to-client messages on repeated GETs, each held until there is
    /// something to say; client-to-server on POSTs.
    LongPolling,
}

impl Transport {
    /// The name negotiation uses.
    pub fn signalr_name(self) -> &'static str {
        match self {
            Transport::Websockets => "WebSockets",
            Transport::ServerSentEvents => "ServerSentEvents",
            Transport::LongPolling => "LongPolling",
        }
    }
}

/// The backend named on the command line; [`Backend`] is what runs.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// io-uring where io_uring works, epoll where it is blocked.
    Auto,
    /// A native ring per core: multishot receive into provided buffers,
    /// DEFER_TASKRUN, batched submissions.
    IoUring,
    /// tokio-uring's reactor: one io_uring per core, owned buffers.
    TokioUring,
    /// tokio's standard reactor: the fallback and the baseline.
    Epoll,
}

/// The backend in force after `auto` has been resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    IoUring,
    TokioUring,
    Epoll,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io-uring",
            Backend::TokioUring => "tokio-uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl Options {
    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_interval > 0).then(|| Duration::from_secs(self.keep_alive_interval))
    }

    pub fn offers(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }

    pub fn poll_timeout(&self) -> Duration {
        Duration::from_secs(self.poll_timeout)
    }

    pub fn disconnect_timeout(&self) -> Duration {
        Duration::from_secs(self.disconnect_timeout)
    }

    pub fn hub_keep_alive(&self) -> Option<Duration> {
        (self.hub_keep_alive > 0).then(|| Duration::from_secs(self.hub_keep_alive))
    }

    pub fn client_timeout(&self) -> Option<Duration> {
        (self.client_timeout > 0).then(|| Duration::from_secs(self.client_timeout))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }

    /// Whether a WebSocket request carrying this Origin header may upgrade.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(origin) => {
                let origin = origin.trim_end_matches('/');
                self.allowed_origins
                    .iter()
                    .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
            }
        }
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(['?', '#', ' ']) {
        Ok(s.to_string())
    } else {
        Err("must be a path starting with '/', without query or spaces (e.g. /ws)".into())
    }
}

fn parse_receive_buffer_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (MIN_RECEIVE_BUFFER..=MAX_RECEIVE_BUFFER).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "must be between {MIN_RECEIVE_BUFFER} and {MAX_RECEIVE_BUFFER} bytes (a control frame must fit in one buffer)"
        ))
    }
}

fn parse_max_message_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n >= 125 {
        Ok(n)
    } else {
        Err("must be at least 125 bytes".into())
    }
}

/// A storm's connection rate: per second, 0 or more (0 skips).
fn parse_case_connections(text: &str) -> Result<(Case, u32), String> {
    let bad = || {
        format!("{text:?} is not CASE=N: give a standard case and its connections, e.g. medium=30")
    };
    let (case, count) = text.split_once('=').ok_or_else(bad)?;
    let case = Case::from_str(case.trim(), true).map_err(|_| bad())?;
    match count.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok((case, n)),
        _ => Err(bad()),
    }
}

impl BenchOptions {
    /// A case's (connections, payload bytes), with --connections applied.
    pub fn shape(&self, case: Case) -> (u32, usize) {
        let (standard, size) = case.shape();
        let connections = self
            .connections
            .iter()
            .rev()
            .find(|(c, _)| *c == case)
            .map_or(standard, |&(_, n)| n);
        (connections, size)
    }
}

fn parse_storm_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: give connections per second, e.g. 1000 (0 skips storms)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringecho").chain(args.iter().copied()))
            .map(|cli| cli.engine)
    }

    fn bench(args: &[&str]) -> Result<BenchOptions, clap::Error> {
        let cli = Cli::try_parse_from(
            ["ringecho", "bench"]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        match cli.command {
            Some(Command::Bench(options)) => Ok(options),
            None => panic!("bench parsed as no subcommand"),
        }
    }

    #[test]
    fn bench_sweeps_comma_separated_engine_options() {
        let b = bench(&[
            "--receive-buffer-size",
            "4096,16384,65536",
            "--backend",
            "tokio-uring,epoll",
        ])
        .unwrap();
        assert_eq!(b.receive_buffer_size, [4096, 16384, 65536]);
        assert_eq!(b.backend, [BackendChoice::TokioUring, BackendChoice::Epoll]);
        assert_eq!(
            b.cases,
            [Case::Small, Case::Medium, Case::Large, Case::Fanin]
        );
        assert!(bench(&["--receive-buffer-size", "4096,12"]).is_err());
        assert!(bench(&["--cases", "huge"]).is_err());
        // Connections per case: the standard count unless given.
        let b = bench(&["--connections", "medium=30,large=40"]).unwrap();
        assert_eq!(b.shape(Case::Small), (100, 20));
        assert_eq!(b.shape(Case::Medium), (30, 1024));
        assert_eq!(b.shape(Case::Large), (40, 16384));
        for bad in ["medium", "huge=3", "medium=0", "medium=x"] {
            let e = bench(&["--connections", bad]).unwrap_err().to_string();
            assert!(e.contains("is not CASE=N"), "{bad}: {e}");
        }
        // Engine options belong before no subcommand: mixing is refused.
        assert!(Cli::try_parse_from(["ringecho", "--threads", "2", "bench"]).is_err());
    }

    #[test]
    fn defaults_follow_the_aspnet_middleware() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(o.keep_alive(), Some(Duration::from_secs(120)));
        assert_eq!(o.receive_buffer_size, 4096);
        assert!(o.allowed_origins.is_empty());
        assert_eq!(o.client_timeout(), None);
        assert_eq!(o.max_message_size, 64 << 20);
        assert_eq!(o.backend, BackendChoice::Auto);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--receive-buffer-size", "16"]).is_err());
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--ws-path", "ws"]).is_err());
        assert!(parse(&["--backend", "kqueue"]).is_err());
        assert!(parse(&["--listen", "nowhere"]).is_err());
    }

    #[test]
    fn origins_compare_exactly_up_to_case_and_trailing_slash() {
        let o = parse(&["--allowed-origin", "https://example.com"]).unwrap();
        assert!(o.origin_allowed(None));
        assert!(o.origin_allowed(Some("https://EXAMPLE.com/")));
        assert!(!o.origin_allowed(Some("https://example.com.evil.net")));
        assert!(!o.origin_allowed(Some("http://example.com")));
        assert!(parse(&[]).unwrap().origin_allowed(Some("http://anything")));
    }
}

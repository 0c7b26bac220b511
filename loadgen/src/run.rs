//! Running a load: one thread per core, each with a current-thread runtime
//! and its share of the connections; per-thread histograms and counters,
//! added together only once a second (the live line) and at the end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context as _;
use fastwebsockets::OpCode;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{self, Decoder, Encoder, Incoming, Target};
use crate::hub::Received;
use crate::hub::{Hub, Said};
use crate::load_thread::{Counts, Report, CLOSE_WAIT, DRAIN, STAGE_TICK};
use crate::options::{Io, LoadConfig, MessageType, Protocol, RunArgs, Scenario};
use crate::payload::Pattern;
use crate::result::{self, Errors, Histograms, Percentiles, RunResult, Summary};
use crate::schedule::Schedule;
use crate::tls::{Stream, WriteHalf};

/// Handshakes under way at once per thread: enough to open thousands of
/// connections in seconds, few enough not to overflow a listen backlog.
const CONNECTING_AT_ONCE: usize = 64;

/// Runs the load described by `args` and returns its result; prints the live
/// line (unless quiet) but not the final table.
pub fn run(args: &RunArgs) -> anyhow::Result<RunResult> {
    let mut load = args.load.clone();
    load.normalize();
    load.validate().map_err(anyhow::Error::msg)?;
    load.io = resolve_io(&load)?;
    anyhow::ensure!(
        !(load.deflate && load.io == Io::Epoll),
        "--deflate needs the io_uring client, and this kernel does not allow io_uring here"
    );
    let load = &load;
    let target = Target::of(load)?;
    // Built once: a payload file is read once, and its bytes shared.
    let pattern = Pattern::for_load(load)?;
    let server = crate::server_info::fetch(&target);
    let cores = pick_cores(load);
    let shares = shares(load, &cores);
    let unpinned = Arc::new(AtomicU32::new(0));

    let connecting = std::time::Instant::now();
    let (to_main, from_threads) = mpsc::channel::<Report>();
    let mut starts = Vec::new();
    let mut handles = Vec::new();
    for (thread, share) in shares.iter().cloned().enumerate() {
        let thread = thread as u32;
        let (start_tx, start_rx) = mpsc::channel::<std::time::Instant>();
        starts.push(start_tx);
        let (load, target, to_main) = (load.clone(), target.clone(), to_main.clone());
        let pattern = pattern.clone();
        let core = share.core;
        let unpinned = unpinned.clone();
        let name = if share.senders {
            "loadgen-senders".to_string()
        } else {
            format!("loadgen-{thread}")
        };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                if share.senders {
                    if let Err(e) = crate::pacing::run_realtime() {
                        eprintln!(
                            "loadgen: the broadcast's senders run at normal priority ({e}): \
                             their sends may leave late behind bursts of deliveries (run as \
                             root, or with CAP_SYS_NICE, for real-time priority)"
                        );
                    }
                }
                if let Some(id) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        eprintln!(
                            "loadgen: thread {thread} could not be pinned to core {id}; it runs \
                             unpinned (is core {id} in this process's CPU set? --cores picks others)"
                        );
                        unpinned.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if load.io == Io::IoUring {
                    if let Err(e) =
                        crate::ring::load_thread(share.ids, &load, &target, pattern, start_rx, to_main)
                    {
                        eprintln!("loadgen: thread {thread}: {e:#}");
                    }
                    return;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(
                    &runtime,
                    load_thread(share, load, target, pattern, start_rx, to_main),
                )
            })
            .context("spawning a load thread")?;
        handles.push(handle);
    }
    drop(to_main);

    // Every thread reports its connections, then all start together.
    let mut connect = result::new_histogram();
    let mut errors = Errors::default();
    let mut connected = 0;
    for _ in 0..shares.len() {
        match from_threads
            .recv()
            .context("a load thread died while connecting")?
        {
            Report::Connected {
                histogram,
                failures,
            } => {
                connected += histogram.len();
                connect.add(histogram)?;
                errors.add(&failures);
            }
            _ => unreachable!("threads report their connections first"),
        }
    }
    let connecting_secs = connecting.elapsed().as_secs_f64();
    if connected == 0 {
        let kinds = &errors.connect_failures_by_kind;
        let hint = if kinds.contains_key("TLS") {
            "is the server's certificate trusted? (--ca FILE, or --insecure for a test certificate)"
        } else if kinds.contains_key("negotiation") {
            "the hub's negotiation gave no connection on this transport (--transport; \
             --skip-negotiation for a hub without negotiation)"
        } else if kinds.keys().any(|k| k.starts_with("HTTP")) {
            "the server refused the WebSocket handshake (its path, --origin, --header?)"
        } else {
            "is the server running?"
        };
        anyhow::bail!(
            "no connection to {} could be opened ({} failed: {}): {hint}",
            load.url,
            errors.connect_failures,
            errors.failures_by_kind()
        );
    }
    let start = match args.start_at {
        None => std::time::Instant::now() + Duration::from_millis(20),
        Some(at) => match at.duration_since(std::time::SystemTime::now()) {
            Ok(wait) => std::time::Instant::now() + wait,
            Err(late) => {
                // The threads close their connections when told nothing.
                drop(starts);
                for handle in handles {
                    let _ = handle.join();
                }
                anyhow::bail!(
                    "--start-at {} passed {:.1} s before the {connected} connections were open: \
                     give the shards a later start",
                    humantime::format_rfc3339_millis(at),
                    late.duration().as_secs_f64()
                );
            }
        },
    };
    for tx in starts {
        let _ = tx.send(start);
    }
    let (from, to) = (
        start + Duration::from_secs_f64(load.warmup),
        start + Duration::from_secs_f64(load.warmup + load.duration),
    );
    // The measured window on the wall clock, for merging shards.
    let wall = |at: std::time::Instant| {
        let now = (std::time::Instant::now(), std::time::SystemTime::now());
        let t = now.1 + at.saturating_duration_since(now.0) - now.0.saturating_duration_since(at);
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let window = result::Window {
        start_unix_secs: wall(from),
        end_unix_secs: wall(to),
    };
    // The server's CPU and memory: from /proc with --server-pid, else from
    // its own /stats when it reports them (from any host).
    let server_process = match args.server_pid {
        Some(pid) => Some(std::thread::spawn(move || watch_process(pid, from, to))),
        None if server["known"] == true => {
            let target = target.clone();
            Some(std::thread::spawn(move || watch_stats(&target, from, to)))
        }
        None => None,
    };
    let own = std::process::id();
    let loadgen_process = std::thread::spawn(move || watch_process(own, from, to));

    let progress = live_line(args.quiet, load.warmup + load.duration);
    let mut latency = result::new_histogram();
    let mut send_lag = result::new_histogram();
    let mut counts = Counts::default();
    let mut seconds: Vec<(Histogram<u64>, u64, usize)> = Vec::new();
    let mut finished = 0;
    while finished < shares.len() {
        match from_threads.recv().context("a load thread died")? {
            Report::Second {
                index,
                histogram,
                messages,
            } => {
                if seconds.len() <= index {
                    seconds.resize_with(index + 1, || (result::new_histogram(), 0, 0));
                }
                let second = &mut seconds[index];
                second.0.add(histogram)?;
                second.1 += messages;
                second.2 += 1;
                if second.2 == shares.len() {
                    progress.set_position(index as u64 + 1);
                    progress.set_message(format!(
                        "{:>9} msgs/s   p50 {:>6} µs   p99 {:>6} µs{}",
                        group(second.1),
                        second.0.value_at_quantile(0.5),
                        second.0.value_at_quantile(0.99),
                        if (index as f64) < load.warmup {
                            "   (warm-up)"
                        } else {
                            ""
                        }
                    ));
                }
            }
            Report::Done {
                histogram,
                send_lag: lag,
                counts: c,
            } => {
                latency.add(histogram)?;
                send_lag.add(lag)?;
                counts.add(&c);
                finished += 1;
            }
            Report::Connected { .. } => unreachable!("connected once"),
        }
    }
    progress.finish_and_clear();
    for handle in handles {
        let _ = handle.join();
    }

    errors.add(&counts.errors);
    if load.scenario == Scenario::Broadcast {
        // Every message sent was due at every open connection.
        errors.missing = (counts.sent * connected).saturating_sub(counts.delivered);
        errors.duplicated = counts.duplicated;
    }
    // The whole seconds of warm-up and measurement that every thread
    // reported; the drain after the end is not part of the run.
    let whole = (load.warmup + load.duration).ceil() as usize;
    let intervals: Vec<result::Interval> = seconds
        .iter()
        .take(whole)
        .take_while(|(_, _, threads)| *threads == shares.len())
        .enumerate()
        .map(|(n, (h, _, _))| result::Interval::new(n as f64, 1.0, h))
        .collect();
    let messages = latency.len();
    let mut summary = Summary {
        duration_secs: load.duration,
        messages,
        msgs_per_sec: messages as f64 / load.duration,
        mib_per_sec: (messages as f64 * load.size as f64) / load.duration / (1024.0 * 1024.0),
        latency_us: Percentiles::of(&latency),
        connect_us: Percentiles::of(&connect),
        connections: connected,
        errors,
        unanswered: counts.unanswered,
        merged_from: 1,
        server_process: server_process.and_then(|watch| watch.join().ok().flatten()),
        loadgen_process: loadgen_process.join().ok().flatten(),
        send_lag_us: load.rate.map(|_| Percentiles::of(&send_lag)),
        bottleneck: None,
        unpinned_threads: unpinned.load(Ordering::Relaxed),
        connecting_secs: Some(connecting_secs),
        window: Some(window),
        broadcasts_sent: (load.scenario == Scenario::Broadcast).then_some(counts.sent),
    };
    summary.bottleneck = summary.bottleneck_warning(load.threads, load.rate.is_none());
    let mut result = RunResult {
        schema: result::SCHEMA.to_string(),
        label: args.label.clone().unwrap_or_else(|| {
            format!(
                "{} · {}",
                crate::server_info::short_name(&server, &target),
                load.default_label()
            )
        }),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        tool: result::Tool {
            name: "loadgen".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: env!("RINGECHO_COMMIT").into(),
        },
        load: load.clone(),
        server,
        machine: crate::server_info::machine(),
        summary,
        histograms: Histograms {
            latency_us: result::encode_histogram(&latency),
            connect_us: result::encode_histogram(&connect),
        },
        parts: Vec::new(),
        intervals,
        limits: Vec::new(),
    };
    result.limits = crate::limits::judge(&result, &args.limits);
    Ok(result)
}

/// One load thread's part of the load.
#[derive(Clone, Debug, PartialEq)]
struct Share {
    /// Its connections' global numbers.
    ids: Vec<u32>,
    core: Option<usize>,
    /// A broadcast's senders' thread: real-time, beside the first thread.
    senders: bool,
}

/// This process's connections (its shard's), dealt out to its threads; a
/// broadcast's senders get a thread of their own on the first thread's core
/// (see `pacing`), the receivers are dealt out as the rest.
fn shares(load: &LoadConfig, cores: &[usize]) -> Vec<Share> {
    let own = load.own_connections();
    let senders = match load.scenario {
        Scenario::Broadcast => load.senders,
        Scenario::Echo => 0,
    };
    let (sending, rest): (Vec<u32>, Vec<u32>) = own.into_iter().partition(|&id| id < senders);
    let mut shares: Vec<Share> = (0..load.threads as usize)
        .map(|thread| Share {
            ids: rest
                .iter()
                .copied()
                .skip(thread)
                .step_by(load.threads as usize)
                .collect(),
            core: cores.get(thread).copied(),
            senders: false,
        })
        .collect();
    if !sending.is_empty() {
        shares.push(Share {
            ids: sending,
            core: cores.first().copied(),
            senders: true,
        });
    }
    // (Every sender: no receiver-only thread.)
    shares.retain(|share| !share.ids.is_empty());
    shares
}

/// Which client runs the load: the ring where it can, tokio otherwise.
fn resolve_io(load: &LoadConfig) -> anyhow::Result<Io> {
    match load.io {
        // Only the tokio client speaks TLS.
        Io::Auto if load.url.starts_with("wss://") => Ok(Io::Epoll),
        // Only the tokio client speaks the hub's fallback transports, and
        // runs broadcasts.
        Io::Auto if load.transport.is_fallback() => Ok(Io::Epoll),
        Io::Auto if load.scenario == Scenario::Broadcast => Ok(Io::Epoll),
        Io::Auto if crate::ring::available() => Ok(Io::IoUring),
        Io::Auto | Io::Epoll => Ok(Io::Epoll),
        Io::IoUring => {
            anyhow::ensure!(
                crate::ring::available(),
                "--io io-uring: this kernel does not allow io_uring here; use --io epoll (or auto)"
            );
            Ok(Io::IoUring)
        }
    }
}

/// The server's CPU time and memory between `from` and `to`.
fn watch_process(
    pid: u32,
    from: std::time::Instant,
    to: std::time::Instant,
) -> Option<result::ServerProcess> {
    std::thread::sleep(from.saturating_duration_since(std::time::Instant::now()));
    let start = crate::server_info::sample_process(pid)?;
    std::thread::sleep(to.saturating_duration_since(std::time::Instant::now()));
    let end = crate::server_info::sample_process(pid)?;
    Some(result::ServerProcess {
        pid,
        source: result::ProcessSource::Proc,
        user_secs: end.user_secs - start.user_secs,
        system_secs: end.system_secs - start.system_secs,
        rss_bytes_start: start.rss_bytes,
        rss_bytes_end: end.rss_bytes,
    })
}

/// The server's CPU time and memory between `from` and `to`, from the
/// `/stats` it serves; nothing if it restarted in between.
fn watch_stats(
    target: &Target,
    from: std::time::Instant,
    to: std::time::Instant,
) -> Option<result::ServerProcess> {
    std::thread::sleep(from.saturating_duration_since(std::time::Instant::now()));
    let (pid, start, started) = crate::server_info::stats_process(target)?;
    std::thread::sleep(to.saturating_duration_since(std::time::Instant::now()));
    let (pid_end, end, started_end) = crate::server_info::stats_process(target)?;
    if (pid_end, started_end) != (pid, started) {
        eprintln!("loadgen: the server restarted during the measured window: no server CPU figure");
        return None;
    }
    Some(result::ServerProcess {
        pid,
        source: result::ProcessSource::Stats,
        user_secs: end.user_secs - start.user_secs,
        system_secs: end.system_secs - start.system_secs,
        rss_bytes_start: start.rss_bytes,
        rss_bytes_end: end.rss_bytes,
    })
}

/// The last `threads` cores this process may run on, unless told otherwise:
/// the server usually takes the first ones.
fn pick_cores(load: &LoadConfig) -> Vec<usize> {
    if load.no_pin {
        return Vec::new();
    }
    if !load.cores.is_empty() {
        return load.cores.clone();
    }
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let n = load.threads as usize;
    if available.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|i| available[(available.len() + i).saturating_sub(n) % available.len()])
        .collect()
}

fn live_line(quiet: bool, seconds: f64) -> ProgressBar {
    if quiet || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(seconds.ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {pos}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A load thread's shared state: touched by its connections only.
struct ThreadState {
    pattern: Pattern,
    /// The hub protocol, or None for raw WebSocket messages.
    hub: Option<Hub>,
    message_type: MessageType,
    rate: Option<f64>,
    in_flight: u32,
    /// --connection-stages: from the start, how many connections send.
    sending: Option<(Instant, crate::schedule::Profile)>,
    /// Echoes completing in [measure_from, end] are measured.
    measure_from: Instant,
    end: Instant,
    latency: RefCell<Histogram<u64>>,
    /// Constant rate: how late each send left, µs.
    send_lag: RefCell<Histogram<u64>>,
    /// The seconds not yet reported, for the live line and the intervals.
    seconds: RefCell<Seconds>,
    /// When the run started: second 0 begins here.
    start: Instant,
    mismatches: Cell<u64>,
    unexpected_frames: Cell<u64>,
    unexpected_closes: Cell<u64>,
    unanswered: Cell<u64>,
    /// --scenario broadcast: how many connections send (the first ids).
    senders: Option<u32>,
    sent: Cell<u64>,
    delivered: Cell<u64>,
    duplicated: Cell<u64>,
}

async fn load_thread(
    share: Share,
    load: LoadConfig,
    target: Target,
    pattern: Pattern,
    start: mpsc::Receiver<std::time::Instant>,
    to_main: mpsc::Sender<Report>,
) {
    let (streams, connect, failures) = connect_share(&share.ids, &load, &target).await;
    let _ = to_main.send(Report::Connected {
        histogram: connect,
        failures,
    });
    let Ok(start) = start.recv() else { return };
    let now_std = std::time::Instant::now();
    let start = Instant::now() + start.saturating_duration_since(now_std);

    let state = Rc::new(ThreadState {
        pattern,
        hub: hub_of(&load),
        message_type: load.message_type,
        rate: load.rate,
        in_flight: load.in_flight,
        sending: crate::schedule::Profile::connections_of(&load).map(|p| (start, p)),
        measure_from: start + Duration::from_secs_f64(load.warmup),
        end: start + Duration::from_secs_f64(load.warmup + load.duration),
        latency: RefCell::new(result::new_histogram()),
        send_lag: RefCell::new(result::new_histogram()),
        seconds: RefCell::new(Seconds::default()),
        start,
        mismatches: Cell::new(0),
        unexpected_frames: Cell::new(0),
        unexpected_closes: Cell::new(0),
        unanswered: Cell::new(0),
        senders: (load.scenario == Scenario::Broadcast).then_some(load.senders),
        sent: Cell::new(0),
        delivered: Cell::new(0),
        duplicated: Cell::new(0),
    });

    tokio::time::sleep_until(start).await;
    let mut talks = Vec::with_capacity(streams.len());
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(id, link)| {
            let talk = Conversation::new(id);
            talks.push((id, talk.clone()));
            tokio::task::spawn_local(connection(link, talk, state.clone()))
        })
        .collect();
    // A broadcast's rate is shared by its senders alone: a thread of
    // receivers has nothing to pace.
    let spread = state.senders.unwrap_or(load.connections);
    talks.retain(|(id, _)| *id < spread);
    let pacer = load.rate.filter(|_| !talks.is_empty()).map(|_| {
        let profile = crate::schedule::Profile::of(&load);
        // A real-time thread must never spin: it would starve its core.
        let spin_below = if share.senders {
            Duration::ZERO
        } else {
            crate::pacing::SPIN_BELOW
        };
        tokio::task::spawn_local(pace(
            start,
            profile,
            spread,
            spin_below,
            state.clone(),
            talks,
        ))
    });

    // The live line: this thread's last second, every second.
    let ticker = {
        let state = state.clone();
        let to_main = to_main.clone();
        tokio::task::spawn_local(async move {
            let mut index = 0;
            loop {
                tokio::time::sleep_until(start + Duration::from_secs(index as u64 + 1)).await;
                let histogram = state.seconds.borrow_mut().take(index);
                let messages = histogram.len();
                if to_main
                    .send(Report::Second {
                        index,
                        histogram,
                        messages,
                    })
                    .is_err()
                {
                    return;
                }
                index += 1;
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    ticker.abort();
    if let Some(pacer) = pacer {
        pacer.abort();
    }
    let counts = Counts {
        errors: Errors {
            mismatches: state.mismatches.get(),
            unexpected_frames: state.unexpected_frames.get(),
            unexpected_closes: state.unexpected_closes.get(),
            ..Errors::default()
        },
        unanswered: state.unanswered.get(),
        sent: state.sent.get(),
        delivered: state.delivered.get(),
        duplicated: state.duplicated.get(),
    };
    let histogram = state.latency.replace(result::new_histogram());
    let send_lag = state.send_lag.replace(result::new_histogram());
    let _ = to_main.send(Report::Done {
        histogram,
        send_lag,
        counts,
    });
}

/// Opens this thread's share of the connections (see `shares`), a few
/// dozen handshakes at a time: the streams with any bytes
/// read past the handshake, the connect-and-handshake times, the failures.
pub(crate) async fn connect_share(
    ids: &[u32],
    load: &LoadConfig,
    target: &Target,
) -> (Vec<(u32, Link)>, Histogram<u64>, Errors) {
    let mut connect = result::new_histogram();
    let mut failures = Errors::default();
    let mut streams = Vec::with_capacity(ids.len());
    // One negotiation after another on one HTTP connection per thread.
    let negotiator = tokio::sync::Mutex::new(crate::transport::Negotiator::new(
        target,
        source_for(&load.source_addr, ids.first().copied().unwrap_or(0)),
    ));
    let negotiator = &negotiator;
    let attempt = |id: u32, due: Option<Instant>| {
        let source = source_for(&load.source_addr, id);
        let hub = hub_of(load);
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            let began = std::time::Instant::now();
            let connected = match hub {
                Some(hub) if load.transport.is_fallback() => {
                    crate::transport::connect(target, source, load.transport, hub)
                        .await
                        .map(|link| Link::Fallback(Box::new(link)))
                }
                Some(hub) => match async {
                    let token = negotiated(negotiator, load).await?;
                    client::connect(target, source, token.as_deref()).await
                }
                .await
                {
                    Ok((mut stream, leftover)) => client::hub_handshake(&mut stream, leftover, hub)
                        .await
                        .map(|leftover| Link::Socket(stream, leftover)),
                    Err(e) => Err(e),
                },
                None => client::connect(target, source, None)
                    .await
                    .map(|(stream, leftover)| Link::Socket(stream, leftover)),
            };
            (id, began.elapsed(), connected)
        }
    };
    // At --connect-rate, every connection at its place in one schedule
    // (over all threads and shards); else a few dozen at a time.
    let rounds: Vec<Vec<_>> = match load.connect_rate {
        Some(rate) => {
            let t0 = Instant::now();
            vec![ids
                .iter()
                .map(|&id| attempt(id, Some(t0 + Duration::from_secs_f64(id as f64 / rate))))
                .collect()]
        }
        None => ids
            .chunks(CONNECTING_AT_ONCE)
            .map(|chunk| chunk.iter().map(|&id| attempt(id, None)).collect())
            .collect(),
    };
    for round in rounds {
        for (id, took, connected) in futures_util::future::join_all(round).await {
            match connected {
                Ok(link) => {
                    let _ = connect.record(took.as_micros().max(1) as u64);
                    streams.push((id, link));
                }
                Err(e) => {
                    if failures.connect_failures == 0 {
                        eprintln!("loadgen: connection {id} failed: {e:#}");
                    }
                    failures.connect_failed(&format!("{e:#}"));
                }
            }
        }
    }
    (streams, connect, failures)
}

/// Constant rate: hands each connection its due times, in order across the
/// thread's connections, sleeping on a timerfd in between (tokio's timers
/// tick in milliseconds; see `pacing`), or, through gaps shorter than
/// `spin_below`, yielding to the connections until the time comes.
async fn pace(
    start: Instant,
    profile: crate::schedule::Profile,
    spread: u32,
    spin_below: Duration,
    state: Rc<ThreadState>,
    talks: Vec<(u32, Rc<Conversation>)>,
) {
    use std::cmp::Reverse;
    let profile = Rc::new(profile);
    let schedules: Vec<Schedule> = talks
        .iter()
        .map(|(id, _)| Schedule::new(start, profile.clone(), spread, *id))
        .collect();
    let mut next: std::collections::BinaryHeap<Reverse<(Instant, usize, u64)>> = schedules
        .iter()
        .enumerate()
        .map(|(i, s)| Reverse((s.due(0), i, 0)))
        .collect();
    let timer = crate::pacing::Timer::new();
    if let Err(e) = &timer {
        eprintln!("loadgen: no timerfd ({e}): sends are paced to the millisecond");
    }
    while let Some(Reverse((due, i, k))) = next.pop() {
        if due >= state.end {
            break;
        }
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let slept = match &timer {
                Ok(timer) if due - now >= spin_below => timer.sleep_until(due).await.is_ok(),
                Ok(_) => {
                    tokio::task::yield_now().await;
                    true
                }
                Err(_) => false,
            };
            if !slept {
                tokio::time::sleep_until(due).await;
            }
        }
        let talk = &talks[i].1;
        talk.credits.borrow_mut().push_back(due);
        talk.wake.notify_one();
        next.push(Reverse((schedules[i].due(k + 1), i, k + 1)));
    }
}

pub(crate) fn source_for(sources: &[IpAddr], id: u32) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[id as usize % sources.len()])
}

/// One connection's conversation: the writer sends on its schedule (closed
/// loop or constant rate), the reader checks echoes in order.
struct Conversation {
    /// Sent and not yet echoed: (sequence number, time latency counts from).
    in_flight: RefCell<VecDeque<(u64, Instant)>>,
    /// Wakes the writer: an echo arrived (closed loop), or a ping needs a pong.
    wake: Notify,
    pongs: RefCell<Vec<Vec<u8>>>,
    /// Constant rate: due times handed out by the thread's pacer, not yet sent.
    credits: RefCell<VecDeque<Instant>>,
    /// We sent our close: the server's close is expected now.
    closing: Cell<bool>,
    /// The reader stopped: nothing more will be answered.
    reader_done: Cell<bool>,
    /// The connection's id: with --connection-stages, it sends while fewer
    /// than the count have smaller ids.
    id: u32,
}

impl Conversation {
    fn new(id: u32) -> Rc<Self> {
        Rc::new(Conversation {
            id,
            in_flight: RefCell::new(VecDeque::new()),
            wake: Notify::new(),
            pongs: RefCell::new(Vec::new()),
            credits: RefCell::new(VecDeque::new()),
            closing: Cell::new(false),
            reader_done: Cell::new(false),
        })
    }
}

/// An open connection: a WebSocket (and what was read past its
/// handshakes), or a hub connection on a fallback transport.
pub(crate) enum Link {
    Socket(Stream, Vec<u8>),
    Fallback(Box<(crate::transport::Poster, crate::transport::Receiver)>),
}

/// Where a connection's messages go: WebSocket frames, or POSTs.
enum Sink {
    Socket(WriteHalf),
    Post(Box<crate::transport::Poster>),
}

async fn connection(link: Link, talk: Rc<Conversation>, state: Rc<ThreadState>) {
    let hard_stop = state.end + DRAIN + CLOSE_WAIT;
    let talking = async {
        match link {
            Link::Socket(stream, leftover) => {
                let (read, write) = stream.into_split();
                let max = state.pattern.size().max(1 << 16) * 2;
                let decoder = Decoder::new(read, &leftover, max);
                let writer = write_loop(Sink::Socket(write), state.clone(), talk.clone());
                let reader = read_loop(decoder, state.clone(), talk.clone());
                tokio::join!(writer, reader);
            }
            Link::Fallback(link) => {
                let (poster, receiver) = *link;
                let writer = write_loop(Sink::Post(Box::new(poster)), state.clone(), talk.clone());
                let reader = read_loop(receiver, state.clone(), talk.clone());
                tokio::join!(writer, reader);
            }
        }
    };
    let _ = tokio::time::timeout_at(hard_stop, talking).await;
    state
        .unanswered
        .set(state.unanswered.get() + talk.in_flight.borrow().len() as u64);
}

/// A WebSocket hub connection's negotiated token, or None with
/// --skip-negotiation.
async fn negotiated(
    negotiator: &tokio::sync::Mutex<crate::transport::Negotiator>,
    load: &LoadConfig,
) -> anyhow::Result<Option<String>> {
    if load.skip_negotiation {
        return Ok(None);
    }
    negotiator.lock().await.token().await.map(Some)
}

async fn write_loop(mut write: Sink, state: Rc<ThreadState>, talk: Rc<Conversation>) {
    let opcode = match state.message_type {
        MessageType::Binary => OpCode::Binary,
        MessageType::Text => OpCode::Text,
    };
    let mut encoder = Encoder::default();
    let mut payload = Vec::with_capacity(state.pattern.size());
    let mut frame = Vec::with_capacity(state.pattern.size() + 14);
    let mut record = Vec::new();
    let mut seq: u64 = 0;
    loop {
        // When may the next message leave, and from when does its latency count?
        let due = if state.rate.is_some() {
            loop {
                if let Some(due) = talk.credits.borrow_mut().pop_front() {
                    break Some(due);
                }
                if talk.reader_done.get() || Instant::now() >= state.end {
                    break None;
                }
                tokio::select! {
                    () = talk.wake.notified() => {
                        if flush_pongs(&mut write, &mut encoder, &talk).await.is_err() { return; }
                    }
                    () = tokio::time::sleep_until(state.end) => {}
                }
            }
        } else {
            while talk.in_flight.borrow().len() >= state.in_flight as usize
                && !talk.reader_done.get()
            {
                tokio::select! {
                    () = talk.wake.notified() => {}
                    () = tokio::time::sleep_until(state.end) => break,
                }
            }
            // Connection stages: wait, open, until the count includes us.
            if let Some((start, profile)) = &state.sending {
                while profile.sending_at(start.elapsed().as_secs_f64()) <= talk.id
                    && !talk.reader_done.get()
                    && Instant::now() < state.end
                {
                    tokio::select! {
                        () = talk.wake.notified() => {
                            if flush_pongs(&mut write, &mut encoder, &talk).await.is_err() { return; }
                        }
                        () = tokio::time::sleep(STAGE_TICK) => {}
                    }
                }
            }
            Some(Instant::now())
        };
        let Some(due) = due else { break };
        if talk.reader_done.get() || (state.rate.is_none() && Instant::now() >= state.end) {
            break;
        }
        frame.clear();
        for pong in talk.pongs.borrow_mut().drain(..) {
            encoder.encode(OpCode::Pong, &pong, &mut frame);
        }
        if state.senders.is_some() {
            // A broadcast: who sends, which, and when it was due.
            payload.clear();
            crate::broadcast::write(&state.pattern, talk.id, seq, due.into_std(), &mut payload);
            match state.hub {
                Some(hub) => {
                    record.clear();
                    hub.write_send_to_all(&payload, &mut record);
                    if matches!(write, Sink::Socket(_)) {
                        encoder.encode(hub.opcode(), &record, &mut frame);
                    }
                }
                None => encoder.encode(opcode, &payload, &mut frame),
            }
            bump(&state.sent);
        } else if let Some(hub) = state.hub {
            // The payload straight into the invocation: one copy.
            record.clear();
            hub.write_invocation(seq, state.pattern.size(), &mut record, |out| {
                state.pattern.append(seq, out)
            });
            if matches!(write, Sink::Socket(_)) {
                encoder.encode(hub.opcode(), &record, &mut frame);
            }
        } else {
            state.pattern.write(seq, &mut payload);
            encoder.encode(opcode, &payload, &mut frame);
        }
        if state.senders.is_none() {
            talk.in_flight.borrow_mut().push_back((seq, due));
        }
        let now = Instant::now();
        if state.rate.is_some() && now >= state.measure_from && now <= state.end {
            let lag = now.saturating_duration_since(due).as_micros() as u64;
            state.send_lag.borrow_mut().saturating_record(lag);
        }
        let sent = match &mut write {
            // (flush: TLS may hold the record back; a plain socket has nothing to do.)
            Sink::Socket(socket) => match socket.write_all(&frame).await {
                Ok(()) => socket.flush().await,
                Err(e) => Err(e),
            },
            // The record becomes the POST's body, not copied: the next one
            // is written into a new buffer.
            Sink::Post(poster) => poster.send(std::mem::take(&mut record).into()).await,
        };
        if sent.is_err() {
            return;
        }
        seq += 1;
    }
    // The run is over: wait for outstanding echoes, then close. A
    // broadcast's receivers wait out the drain: deliveries sent by others
    // just before the end may still come.
    let drained = state.end + DRAIN;
    let waits =
        |talk: &Conversation| state.senders.is_some() || !talk.in_flight.borrow().is_empty();
    while waits(&talk) && !talk.reader_done.get() && Instant::now() < drained {
        tokio::select! {
            () = talk.wake.notified() => {
                if flush_pongs(&mut write, &mut encoder, &talk).await.is_err() { return; }
            }
            () = tokio::time::sleep_until(drained) => {}
        }
    }
    talk.closing.set(true);
    match &mut write {
        Sink::Socket(socket) => {
            frame.clear();
            encoder.encode(OpCode::Close, &1000u16.to_be_bytes(), &mut frame);
            let _ = socket.write_all(&frame).await;
            let _ = socket.flush().await;
        }
        Sink::Post(poster) => poster.close().await,
    }
}

/// Answers the server's pings (WebSockets only: fallbacks have none).
async fn flush_pongs(
    write: &mut Sink,
    encoder: &mut Encoder,
    talk: &Conversation,
) -> std::io::Result<()> {
    let Sink::Socket(write) = write else {
        return Ok(());
    };
    let mut frame = Vec::new();
    for pong in talk.pongs.borrow_mut().drain(..) {
        encoder.encode(OpCode::Pong, &pong, &mut frame);
    }
    if frame.is_empty() {
        return Ok(());
    }
    write.write_all(&frame).await?;
    write.flush().await
}

async fn read_loop(
    mut decoder: impl crate::transport::Messages,
    state: Rc<ThreadState>,
    talk: Rc<Conversation>,
) {
    let mut records = state.hub.map(Hub::records).unwrap_or_default();
    let mut receiver = Receiver::default();
    loop {
        let incoming = decoder.next().await;
        let now = Instant::now();
        match incoming {
            Ok(Incoming::Text(data)) | Ok(Incoming::Binary(data))
                if state.hub.is_some_and(|hub| {
                    (hub.opcode() == OpCode::Text) == incoming_is_text(&incoming)
                }) =>
            {
                let hub = state.hub.expect("a hub connection");
                let mut server_closed = false;
                records.feed(data, |record| {
                    if state.senders.is_some() {
                        match hub.read_receive(record) {
                            Received::Payload(payload) => receiver.deliver(&state, &payload, now),
                            Received::Ping => {}
                            Received::Close => server_closed = true,
                            Received::Unexpected => bump(&state.unexpected_frames),
                        }
                        return;
                    }
                    let expected = talk.in_flight.borrow().front().map(|&(seq, _)| seq);
                    match hub.read(record, expected, &state.pattern) {
                        Said::Completion { ok } => {
                            let Some((_, due)) = talk.in_flight.borrow_mut().pop_front() else {
                                bump(&state.unexpected_frames);
                                return;
                            };
                            if !ok {
                                bump(&state.mismatches);
                            }
                            record_latency(&state, due, now);
                            talk.wake.notify_one();
                        }
                        Said::Ping => {}
                        Said::Close => server_closed = true,
                        Said::Unexpected => bump(&state.unexpected_frames),
                    }
                });
                if server_closed {
                    if !talk.closing.get() {
                        bump(&state.unexpected_closes);
                    }
                    break;
                }
            }
            Ok(Incoming::Binary(_)) | Ok(Incoming::Text(_)) if state.hub.is_some() => {
                bump(&state.unexpected_frames)
            }
            Ok(Incoming::Binary(payload)) | Ok(Incoming::Text(payload))
                if state.senders.is_some() =>
            {
                let is_text = matches!(incoming, Ok(Incoming::Text(_)));
                if is_text != (state.message_type == MessageType::Text) {
                    bump(&state.mismatches);
                    continue;
                }
                receiver.deliver(&state, payload, now);
            }
            Ok(Incoming::Binary(payload)) | Ok(Incoming::Text(payload)) => {
                let is_text = matches!(incoming, Ok(Incoming::Text(_)));
                let Some((seq, due)) = talk.in_flight.borrow_mut().pop_front() else {
                    bump(&state.unexpected_frames);
                    continue;
                };
                let right_type = is_text == (state.message_type == MessageType::Text);
                if !right_type || !state.pattern.matches(seq, payload) {
                    bump(&state.mismatches);
                }
                record_latency(&state, due, now);
                talk.wake.notify_one();
            }
            Ok(Incoming::Ping(payload)) => {
                talk.pongs.borrow_mut().push(payload.to_vec());
                talk.wake.notify_one();
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(_)) => {
                if !talk.closing.get() {
                    bump(&state.unexpected_closes);
                }
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                bump(&state.unexpected_frames);
                break;
            }
            Err(_) => {
                if !talk.closing.get() {
                    bump(&state.unexpected_closes);
                }
                break;
            }
        }
    }
    talk.reader_done.set(true);
    talk.wake.notify_one();
}

/// One receiver's bookkeeping of broadcast deliveries.
#[derive(Default)]
struct Receiver {
    tracker: crate::broadcast::Tracker,
    /// The expected payload, rebuilt to check each delivery.
    scratch: Vec<u8>,
}

impl Receiver {
    /// Checks one delivery and measures it from when it was due.
    fn deliver(&mut self, state: &ThreadState, payload: &[u8], now: Instant) {
        use crate::broadcast::Verdict;
        let Some(delivery) = crate::broadcast::read(&state.pattern, payload, &mut self.scratch)
        else {
            bump(&state.mismatches);
            return;
        };
        match self.tracker.judge(&delivery) {
            Verdict::Duplicate => bump(&state.duplicated),
            Verdict::New { .. } => {
                bump(&state.delivered);
                record_latency(state, Instant::from_std(delivery.due), now);
            }
        }
    }
}

/// One thread's per-second histograms, each echo in the second it arrived
/// in. The ticker that reports a second wakes a little after it ends (tokio's
/// timers tick in milliseconds and the connections' tasks run first), so a
/// single current histogram would lend the next second's first echoes to
/// this one; keyed by arrival, a second holds exactly its own.
#[derive(Default)]
struct Seconds {
    /// The index of `waiting[0]`: every earlier second was reported.
    first: usize,
    waiting: VecDeque<Histogram<u64>>,
}

impl Seconds {
    fn record(&mut self, second: usize, micros: u64) {
        // An echo can only arrive after the second it falls in was reported
        // if the clock went backwards; it then counts in the oldest waiting.
        let at = second.saturating_sub(self.first);
        while self.waiting.len() <= at {
            self.waiting.push_back(result::new_histogram());
        }
        self.waiting[at].saturating_record(micros);
    }

    /// The histogram of `second`, reported once its end has passed; every
    /// second before it was taken already.
    fn take(&mut self, second: usize) -> Histogram<u64> {
        debug_assert_eq!(second, self.first, "seconds are taken in order");
        self.first += 1;
        self.waiting
            .pop_front()
            .unwrap_or_else(result::new_histogram)
    }
}

/// Records one echo's latency, counted from when it was due.
fn record_latency(state: &ThreadState, due: Instant, now: Instant) {
    let micros = now.saturating_duration_since(due).as_micros().max(1) as u64;
    let second = now.saturating_duration_since(state.start).as_secs() as usize;
    state.seconds.borrow_mut().record(second, micros);
    if now >= state.measure_from && now <= state.end {
        state.latency.borrow_mut().saturating_record(micros);
    }
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// The hub protocol of `load`, if it speaks the hub's.
fn hub_of(load: &LoadConfig) -> Option<Hub> {
    (load.protocol == Protocol::Hub).then_some(Hub {
        encoding: load.hub_encoding,
        message_type: load.message_type,
    })
}

fn incoming_is_text(incoming: &std::io::Result<Incoming>) -> bool {
    matches!(incoming, Ok(Incoming::Text(_)))
}

#[cfg(test)]
mod tests {
    use super::{shares, Seconds, Share};
    use crate::options::Scenario;

    #[test]
    fn threads_share_the_connections_and_a_broadcasts_senders_get_their_own() {
        let mut load = crate::test_load();
        load.connections = 7;
        load.threads = 2;
        let share = |ids: &[u32], core, senders| Share {
            ids: ids.to_vec(),
            core,
            senders,
        };
        assert_eq!(
            shares(&load, &[2, 3]),
            [
                share(&[0, 2, 4, 6], Some(2), false),
                share(&[1, 3, 5], Some(3), false)
            ]
        );
        load.scenario = Scenario::Broadcast;
        load.senders = 3;
        assert_eq!(
            shares(&load, &[2, 3]),
            [
                share(&[3, 5], Some(2), false),
                share(&[4, 6], Some(3), false),
                share(&[0, 1, 2], Some(2), true)
            ]
        );
        // Unpinned, and every connection a sender: no empty thread.
        load.senders = 7;
        assert_eq!(
            shares(&load, &[]),
            [share(&[0, 1, 2, 3, 4, 5, 6], None, true)]
        );
    }

    #[test]
    fn each_echo_counts_in_the_second_it_arrived_in() {
        let mut seconds = Seconds::default();
        seconds.record(0, 10);
        // Second 1's first echoes arrive before second 0 is reported.
        seconds.record(1, 20);
        seconds.record(1, 30);
        seconds.record(0, 40);
        assert_eq!(seconds.take(0).len(), 2);
        // A second with no echo at all is reported empty.
        seconds.record(3, 50);
        assert_eq!(seconds.take(1).len(), 2);
        assert_eq!(seconds.take(2).len(), 0);
        assert_eq!(seconds.take(3).len(), 1);
        // Later than reported (a clock gone backwards): the oldest waiting.
        seconds.record(1, 60);
        assert_eq!(seconds.take(4).len(), 1);
    }
}

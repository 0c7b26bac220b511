//! `loadgen soak`: many connections held, pinged, churned and closed, with
//! the server's resident memory sampled at each stage (when its PID is
//! given) and its open-connection count read back from `/stats` at the end.
//! Bounded in count and time; loopback targets only by design of its use.

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use fastwebsockets::OpCode;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::client::{self, Decoder, Encoder, Incoming, Target};
use crate::options::SoakArgs;

/// How long after the last connection opened its memory is sampled.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
    /// The server's resident memory, KiB (when its PID was given).
    pub server_rss_kib: Option<u64>,
    /// The server's CPU time so far, user plus system seconds (when its PID
    /// was given).
    #[serde(default)]
    pub server_cpu_secs: Option<f64>,
    pub open: usize,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub connections: usize,
    pub stages: Vec<Stage>,
    /// (RSS with every connection open, 2 s after the last opened − RSS
    /// before) / connections.
    pub bytes_per_idle_connection: Option<f64>,
    pub pings_received: u64,
    pub echoes: u64,
    pub errors: u64,
    pub connect_failures: u64,
    pub churned: u64,
    /// Connections churned per second, as achieved.
    pub churn_rate_achieved: Option<f64>,
    /// The server's CPU time during the churn divided by the connections
    /// churned, µs: what one connection's open, upgrade and close cost it.
    pub server_cpu_us_per_churned: Option<f64>,
    /// The server's own count of open connections after everything closed.
    pub server_open_after: Option<u64>,
}

/// One held connection: stopped through its channel.
struct Held {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    pings: Cell<u64>,
    echoes: Cell<u64>,
    errors: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

pub fn soak(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(
        args.url.starts_with("ws://"),
        "soak --url must be ws://… (the soak holds plain connections; got {:?})",
        args.url
    );
    let target = Target::parse(&args.url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(args, target))
}

async fn run(args: &SoakArgs, target: Target) -> anyhow::Result<SoakReport> {
    let counts = Rc::new(Counts::default());
    let started = Instant::now();
    let mut stages = Vec::new();
    let stage = |name: &str, open: usize| Stage {
        name: name.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        server_rss_kib: args.server_pid.and_then(rss_kib),
        server_cpu_secs: args
            .server_pid
            .and_then(crate::server_info::sample_process)
            .map(|p| p.user_secs + p.system_secs),
        open,
    };
    stages.push(stage("before", 0));
    eprintln!("soak: opening {} connections", args.connections);

    let mut held: Vec<Option<Held>> = Vec::with_capacity(args.connections);
    let mut connect_failures = 0u64;
    for chunk in (0..args.connections).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(chunk.iter().map(|&i| {
            open(
                &target,
                source(&args.source_addr, i),
                i % 10 == 0,
                counts.clone(),
            )
        }))
        .await;
        for h in opened {
            match h {
                Ok(h) => held.push(Some(h)),
                Err(e) => {
                    if connect_failures == 0 {
                        eprintln!("soak: a connection failed: {e:#}");
                    }
                    connect_failures += 1;
                    held.push(None);
                }
            }
        }
    }
    let open_count = |held: &[Option<Held>]| held.iter().filter(|h| h.is_some()).count();
    // Idle memory is what stays: servers give back what their handshakes
    // used over the next moments (allocators purge lazily, some once a
    // second), so the sample waits that long rather than catching it in
    // passing. Measured right after the last handshake, ringecho's io-uring
    // backend read anywhere from 404 to 825 bytes per connection.
    tokio::time::sleep(SETTLE).await;
    stages.push(stage("all open", open_count(&held)));
    eprintln!("soak: holding for {} s (a tenth echoing)", args.hold);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    stages.push(stage("after hold", open_count(&held)));

    eprintln!(
        "soak: churning {} per second for {} s",
        args.churn_rate, args.churn
    );
    let mut churned = 0u64;
    let mut next = 0usize;
    let churn_start = Instant::now();
    let churn_end = churn_start + Duration::from_secs(args.churn);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < churn_end && !held.is_empty() {
        tick.tick().await;
        let batch = (args.churn_rate / 10).max(1);
        let mut reopen = Vec::with_capacity(batch);
        let mut closing = Vec::with_capacity(batch);
        for _ in 0..batch {
            let i = next % held.len();
            next += 1;
            if let Some(h) = held[i].take() {
                let _ = h.stop.send(());
                closing.push(h.task);
            }
            reopen.push(i);
        }
        // Closed together: one at a time, each close's round trip would
        // cap the churn rate well below what the server can take.
        futures_util::future::join_all(closing).await;
        let opened = futures_util::future::join_all(reopen.iter().map(|&i| {
            open(
                &target,
                source(&args.source_addr, i),
                i % 10 == 0,
                counts.clone(),
            )
        }))
        .await;
        for (i, h) in reopen.into_iter().zip(opened) {
            match h {
                Ok(h) => {
                    held[i] = Some(h);
                    churned += 1;
                }
                Err(_) => connect_failures += 1,
            }
        }
    }
    let churn_seconds = churn_start.elapsed().as_secs_f64();
    stages.push(stage("after churn", open_count(&held)));

    eprintln!("soak: closing everything");
    for h in held.iter_mut().filter_map(Option::take) {
        let _ = h.stop.send(());
        let _ = h.task.await;
    }
    // The server counts its connections down as the closes arrive.
    let mut server_open_after = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        server_open_after = server_open(&target);
        if server_open_after.is_some_and(|n| n <= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The /stats request itself is the one connection left open.
    server_open_after = server_open_after.map(|n| n.saturating_sub(1));
    // Servers return freed memory lazily, over seconds: sample until the
    // resident size stops falling (two seconds without a drop), at least 3 s
    // and at most 15 s after the last close.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(pid) = args.server_pid {
        let mut lowest = rss_kib(pid);
        let mut steady = 0;
        for _ in 0..12 {
            if steady >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = rss_kib(pid);
            if now < lowest {
                lowest = now;
                steady = 0;
            } else {
                steady += 1;
            }
        }
    }
    stages.push(stage("all closed", 0));

    let bytes_per_idle_connection = match (stages[0].server_rss_kib, stages[1].server_rss_kib) {
        (Some(before), Some(open)) if stages[1].open > 0 => {
            Some((open.saturating_sub(before) * 1024) as f64 / stages[1].open as f64)
        }
        _ => None,
    };
    let churn_rate_achieved = (churned > 0).then(|| churned as f64 / churn_seconds);
    let server_cpu_us_per_churned = match (stages[2].server_cpu_secs, stages[3].server_cpu_secs) {
        (Some(before), Some(after)) if churned > 0 => Some((after - before) * 1e6 / churned as f64),
        _ => None,
    };
    Ok(SoakReport {
        connections: args.connections,
        churn_rate_achieved,
        server_cpu_us_per_churned,
        stages,
        bytes_per_idle_connection,
        pings_received: counts.pings.get(),
        echoes: counts.echoes.get(),
        errors: counts.errors.get(),
        connect_failures,
        churned,
        server_open_after,
    })
}

fn source(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}

/// Opens one connection and keeps it: answers pings, and when `active`
/// sends a 20-byte message every second and checks its echo.
async fn open(
    target: &Target,
    source: Option<IpAddr>,
    active: bool,
    counts: Rc<Counts>,
) -> anyhow::Result<Held> {
    let (stream, leftover) = client::connect(target, source, None).await?;
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::task::spawn_local(async move {
        let (read, mut write) = stream.into_split();
        let mut decoder = Decoder::new(read, &leftover, 1 << 20);
        let mut encoder = Encoder::default();
        let mut frame = Vec::new();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut expected: Option<Vec<u8>> = None;
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => {
                    frame.clear();
                    encoder.encode(OpCode::Close, &1000u16.to_be_bytes(), &mut frame);
                    let _ = write.write_all(&frame).await;
                    // Wait briefly for the server's close, so it ends cleanly.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Ok(incoming) = decoder.next().await {
                            if matches!(incoming, Incoming::Close(_)) { break; }
                        }
                    }).await;
                    return;
                }
                _ = every.tick(), if active && expected.is_none() => {
                    let payload = format!("{n:020}").into_bytes();
                    n += 1;
                    frame.clear();
                    encoder.encode(OpCode::Binary, &payload, &mut frame);
                    if write.write_all(&frame).await.is_err() { bump(&counts.errors); return; }
                    expected = Some(payload);
                }
                incoming = decoder.next() => match incoming {
                    Ok(Incoming::Ping(payload)) => {
                        bump(&counts.pings);
                        frame.clear();
                        encoder.encode(OpCode::Pong, payload, &mut frame);
                        if write.write_all(&frame).await.is_err() { bump(&counts.errors); return; }
                    }
                    Ok(Incoming::Binary(payload)) if expected.as_deref() == Some(payload) => {
                        bump(&counts.echoes);
                        expected = None;
                    }
                    Ok(Incoming::Pong) => {}
                    _ => { bump(&counts.errors); return; }
                },
            }
        }
    });
    Ok(Held { stop, task })
}

fn rss_kib(pid: u32) -> Option<u64> {
    crate::server_info::sample_process(pid).map(|p| p.rss_bytes / 1024)
}

fn server_open(target: &Target) -> Option<u64> {
    let stats = crate::server_info::read_stats(target)?;
    stats["totals"]["open_connections"].as_u64()
}

/// A table of the stages for people.
pub fn describe(report: &SoakReport) -> String {
    let mut out = format!("soak of {} connections\n", report.connections);
    for s in &report.stages {
        let rss = s
            .server_rss_kib
            .map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        out.push_str(&format!(
            "  {:<12} t={:>6.1}s  open {:>6}  server RSS {rss}\n",
            s.name, s.seconds, s.open
        ));
    }
    if let Some(b) = report.bytes_per_idle_connection {
        out.push_str(&format!("  bytes per idle connection: {b:.0}\n"));
    }
    if let (Some(rate), Some(cpu)) = (report.churn_rate_achieved, report.server_cpu_us_per_churned)
    {
        out.push_str(&format!(
            "  churn: {rate:.0} connections/s, {cpu:.1} µs of server CPU each (open, upgrade, close)\n"
        ));
    }
    out.push_str(&format!(
        "  pings answered {}, echoes {}, churned {}, errors {}, failed connections {}, server open after {}\n",
        report.pings_received,
        report.echoes,
        report.churned,
        report.errors,
        report.connect_failures,
        report.server_open_after.map_or("?".to_string(), |n| n.to_string())
    ));
    out
}

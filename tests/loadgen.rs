//! loadgen against the real engine: a two-second load in each mode, its
//! result file read back, and compare / plot / merge on those results.
//! No test here asserts a speed.

mod common;

use common::Engine;
use loadgen::options::{Io, LoadConfig, Protocol, RunArgs};
use loadgen::report::{self, Style};
use loadgen::RunResult;
use std::time::{Duration, Instant};

/// Each test loads both cores; run them one at a time so that neither
/// starves the other's constant-rate schedule.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn args(
    engine: &Engine,
    protocol: Protocol,
    rate: Option<f64>,
    io: Io,
    out: std::path::PathBuf,
) -> RunArgs {
    let path = match protocol {
        Protocol::Raw => "/ws",
        Protocol::Hub => "/hub",
    };
    let mut load = LoadConfig::with_defaults(&engine.url(path));
    load.connections = 20;
    load.size = 100;
    load.duration = 2.0;
    load.warmup = 0.5;
    load.no_pin = true;
    load.source_addr = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    load.protocol = protocol;
    load.in_flight = 2;
    load.io = io;
    load.rate = rate;
    RunArgs {
        load,
        out: Some(out),
        hgrm: None,
        hlog: None,
        quiet: true,
        label: None,
        server_pid: Some(engine.pid() as u32),
        start_at: None,
        limits: Default::default(),
    }
}

#[test]
fn both_modes_run_check_every_echo_and_save_their_results() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-loadgen-{}", std::process::id()));
    let engine = Engine::start("tokio-uring", &["--receive-buffer-size", "8192"]);
    let mut results = Vec::new();
    // auto: the io_uring loop, for raw WebSockets and the hub alike.
    let runs = [
        ("closed", Protocol::Raw, None, Io::Auto),
        ("rate", Protocol::Raw, Some(2000.0), Io::Auto),
        ("closed-tokio", Protocol::Raw, None, Io::Epoll),
        ("rate-tokio", Protocol::Raw, Some(2000.0), Io::Epoll),
        ("hub-closed", Protocol::Hub, None, Io::Auto),
        ("hub-rate", Protocol::Hub, Some(2000.0), Io::Auto),
        ("hub-closed-tokio", Protocol::Hub, None, Io::Epoll),
    ];
    for (name, protocol, rate, io) in runs {
        let path = dir.join(format!("{name}.json"));
        let run = args(&engine, protocol, rate, io, path.clone());
        let result = loadgen::run::run(&run).expect("the run completes");
        loadgen::save_outputs(&run, &result).unwrap();
        let back = RunResult::load(&path).expect("the result file reads back");
        let s = &back.summary;
        assert_eq!(s.errors.total(), 0, "{name}: {:?}", s.errors);
        assert!(s.messages > 0, "{name}: no message measured");
        assert_eq!(s.connections, 20);
        assert_eq!(s.latency_us.count, s.messages);
        assert_eq!(back.latency().unwrap().len(), s.messages);
        let mut expected_load = run.load.clone();
        expected_load.normalize();
        // The result names the client that ran, never auto.
        expected_load.io = match io {
            Io::Auto => Io::IoUring,
            io => io,
        };
        assert_eq!(back.load, expected_load);
        assert!(
            s.loadgen_process.is_some(),
            "{name}: loadgen's own CPU is recorded"
        );
        assert_eq!(
            s.send_lag_us.is_some(),
            rate.is_some(),
            "{name}: send lag at a rate"
        );
        // The engine's configuration came from its /stats.
        assert_eq!(back.server["known"], true);
        assert_eq!(back.server["config"]["receive_buffer_size"], 8192);
        assert_eq!(back.server["backend"], "tokio-uring");
        assert!(back.machine.cores > 0 && !back.machine.kernel.is_empty());
        // The engine's CPU time over the window was measured from /proc.
        let process = s
            .server_process
            .as_ref()
            .expect("--server-pid measures the server");
        assert_eq!(process.pid, engine.pid() as u32);
        assert!(
            process.user_secs + process.system_secs > 0.0,
            "{name}: {process:?}"
        );
        assert!(process.rss_bytes_end > 0);
        results.push(back);
    }
    // Constant rate: close to the asked rate (2000/s for 2 s), whatever the
    // machine's speed; the measured window cuts at most a few at its edges.
    for rate_run in [&results[1].summary, &results[3].summary] {
        assert!(
            (3600..=4200).contains(&rate_run.messages),
            "constant rate sent {} messages in 2 s at 2000/s",
            rate_run.messages
        );
    }
    // The engine saw every connection close cleanly, on both clients.
    let stats = engine.wait_for_no_connections();
    assert_eq!(stats["totals"]["closes"]["1000"], 140);
    // Hub invocations were counted as messages by the engine.
    assert!(stats["totals"]["messages_in"].as_u64().unwrap() >= results[4].summary.messages);

    let table = report::compare(&results, Style::Markdown);
    assert!(table.lines().next().unwrap().contains("rate"), "{table}");
    let svg = dir.join("plot.svg");
    loadgen::plot::plot(&results, &svg).unwrap();
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg") && drawing.contains("Echo latency by percentile"));
    // Runs made one after another with different loads are not one load.
    let refused = RunResult::merge(&results, 1.0).unwrap_err().to_string();
    assert!(refused.contains("were not one load"), "{refused}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A run's seconds, in its result and as an interval log that
/// HdrHistogram's own Python port reads back; its limits, judged.
#[test]
fn a_run_keeps_its_seconds_and_is_judged_by_its_limits() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-seconds-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--threads", "1"]);
    let mut run = args(
        &engine,
        Protocol::Raw,
        Some(1000.0),
        Io::Auto,
        dir.join("r.json"),
    );
    run.load.warmup = 1.0;
    run.load.duration = 3.0;
    run.hlog = Some(dir.join("r.hlog"));
    run.limits = loadgen::options::Limits {
        max_p99: Some(10_000_000),
        min_rate: Some(1e9),
        ..Default::default()
    };
    let result = loadgen::run::run(&run).expect("the run completes");
    loadgen::save_outputs(&run, &result).unwrap();

    // One interval a second, warm-up included, from every echo.
    let intervals = &result.intervals;
    assert_eq!(intervals.len(), 4, "{intervals:?}");
    for (n, i) in intervals.iter().enumerate() {
        assert_eq!((i.offset_secs, i.length_secs), (n as f64, 1.0));
        assert_eq!(i.latency().unwrap().len(), i.messages);
        assert!(
            (900..=1100).contains(&i.messages),
            "second {n}: {} echoes at 1000/s",
            i.messages
        );
    }
    let held: Vec<bool> = result.limits.iter().map(|v| v.held).collect();
    assert_eq!(
        held,
        [true, false],
        "p99 under 10 s holds; 1e9 msgs/s does not"
    );

    // The interval log, read by HdrHistogram's Python port.
    let read = common::python_json([
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/loadgen/hlog.py"
        )),
        dir.join("r.hlog"),
    ]);
    let read = read.as_array().expect("a list of intervals");
    assert_eq!(read.len(), intervals.len());
    let window = result.summary.window.unwrap();
    let start_ms = (window.start_unix_secs - run.load.warmup) * 1000.0;
    for (n, (theirs, ours)) in read.iter().zip(intervals).enumerate() {
        assert_eq!(theirs["count"], ours.messages, "second {n}");
        // The same histogram: their p99 is ours, give or take the rank
        // rounding of each implementation.
        let h = ours.latency().unwrap();
        let slack = 2.0 / h.len().max(1) as f64;
        let (low, high) = (
            h.value_at_quantile((0.99 - slack).max(0.0)),
            h.value_at_quantile((0.99 + slack).min(1.0)),
        );
        let p99 = theirs["p99"].as_u64().unwrap();
        assert!(
            (low..=high).contains(&p99),
            "second {n}: their p99 {p99} µs, ours between {low} and {high}"
        );
        let at = theirs["start_ms"].as_f64().unwrap();
        assert!(
            (at - (start_ms + n as f64 * 1000.0)).abs() < 2.0,
            "second {n} starts at {at} ms, not {start_ms} + {n} s"
        );
    }

    // And drawn over time.
    let svg = dir.join("seconds.svg");
    loadgen::plot::plot(&[result], &svg).unwrap();
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("Throughput over time"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Stages ramp the offered rate: up from nothing, held, down again; each
/// second carries what the ramp says.
#[test]
fn stages_ramp_the_offered_rate_second_by_second() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-stages-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--threads", "1"]);
    let mut run = args(&engine, Protocol::Raw, None, Io::Auto, dir.join("s.json"));
    run.load.warmup = 0.0;
    run.load.stages = ["1s:2000/s", "1s:2000/s", "1s:0/s"]
        .map(|s| loadgen::options::RateStage::parse(s).unwrap())
        .to_vec();
    let result = loadgen::run::run(&run).expect("the run completes");
    assert_eq!(
        result.load.duration, 3.0,
        "the stages are the measured window"
    );
    assert_eq!(result.load.mode(), "staged-rate");
    let seconds: Vec<u64> = result.intervals.iter().map(|i| i.messages).collect();
    assert_eq!(seconds.len(), 3, "{seconds:?}");
    for (got, want) in seconds.iter().zip([1000, 2000, 1000]) {
        assert!(
            (*got as f64 - want as f64).abs() <= want as f64 * 0.1,
            "{seconds:?} against 1000, 2000, 1000"
        );
    }
    assert_eq!(result.summary.errors.total(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A connection storm at a known rate against an engine that admits 50:
/// the rest get the engine's 503, counted as such.
#[test]
fn a_connection_storm_beyond_the_engines_limit_is_counted_by_kind() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-storm-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--max-connections", "50", "--threads", "1"]);
    let mut run = args(
        &engine,
        Protocol::Raw,
        None,
        Io::Auto,
        dir.join("storm.json"),
    );
    run.load.connections = 80;
    run.load.connect_rate = Some(400.0);
    run.load.duration = 0.5;
    run.load.warmup = 0.0;
    let started = std::time::Instant::now();
    let result = loadgen::run::run(&run).expect("the admitted connections run");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(190),
        "80 connections at 400 per second take 0.2 s to open"
    );
    let e = &result.summary.errors;
    // The start-up read of /stats may still hold one place as the storm begins.
    assert!((49..=50).contains(&result.summary.connections), "{e:?}");
    assert_eq!(result.summary.connections + e.connect_failures, 80, "{e:?}");
    // The refused connections' closes are part of their refusal, not
    // closes of open connections.
    assert_eq!(
        e.unexpected_closes + e.mismatches + e.unexpected_frames,
        0,
        "{e:?}"
    );
    assert_eq!(
        e.connect_failures_by_kind.get("HTTP 503"),
        Some(&e.connect_failures),
        "{e:?}"
    );
    assert_eq!(result.summary.connect_us.count, result.summary.connections);
    // Counts go back to zero after the storm.
    let stats = engine.wait_for_no_connections();
    assert_eq!(stats["totals"]["open_websockets"], 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// The engine checks origins: loadgen's --origin passes or gets the 403.
#[test]
fn the_engine_sees_loadgens_origin_and_headers() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-origin-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--allowed-origin", "https://a.example"]);
    let mut run = args(&engine, Protocol::Raw, None, Io::Auto, dir.join("o.json"));
    run.load.duration = 0.5;
    run.load.warmup = 0.0;
    run.load.origin = Some("https://a.example".into());
    run.load.headers = vec!["X-Load-Test: 1".into()];
    let result = loadgen::run::run(&run).expect("an allowed origin connects");
    assert_eq!(result.summary.connections, 20);
    run.load.origin = Some("https://b.example".into());
    let refused = loadgen::run::run(&run).unwrap_err().to_string();
    assert!(refused.contains("could be opened"), "{refused}");
    let stats = engine.wait_for_no_connections();
    assert!(
        stats["totals"]["origins_refused"].as_u64().unwrap() >= 20,
        "{stats}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// --hub-encoding messagepack against the engine's hub: Echo invocations
/// in MessagePack, payloads as bytes and as strings, both clients, paced
/// and closed loop, every completion checked.
#[test]
fn messagepack_hub_invocations_are_checked_on_both_clients() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-msgpack-{}", std::process::id()));
    let engine = Engine::start("io-uring", &[]);
    for (io, message_type, rate) in [
        (Io::Auto, loadgen::options::MessageType::Binary, None),
        (Io::Epoll, loadgen::options::MessageType::Binary, None),
        (Io::Auto, loadgen::options::MessageType::Text, Some(2000.0)),
        (Io::Epoll, loadgen::options::MessageType::Text, Some(2000.0)),
    ] {
        let mut run = args(&engine, Protocol::Hub, rate, io, dir.join("m.json"));
        run.load.hub_encoding = loadgen::options::HubEncoding::Messagepack;
        run.load.message_type = message_type;
        run.load.duration = 1.0;
        let result = loadgen::run::run(&run).expect("the run completes");
        let s = &result.summary;
        assert_eq!(
            s.errors.total(),
            0,
            "{io:?} {message_type:?}: {:?}",
            s.errors
        );
        assert!(s.messages > 0);
        assert!(result.label.contains("hub MessagePack"), "{}", result.label);
    }
    let stats = engine.wait_for_no_connections();
    assert_eq!(stats["totals"]["closes"]["1006"], 0, "{stats}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Over WebSockets loadgen negotiates first, as the official client does,
/// and upgrades with its one-use token (which the engine checks); with
/// --skip-negotiation it goes straight to the hub URL. An engine that does
/// not offer WebSockets tells the two apart: negotiation finds it missing
/// from the offer, the skipped upgrade gets the engine's 404.
#[test]
fn hub_websockets_negotiate_unless_told_to_skip() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-negotiate-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--threads", "2"]);
    for io in [Io::Auto, Io::Epoll] {
        for skip in [false, true] {
            let mut run = args(&engine, Protocol::Hub, None, io, dir.join("n.json"));
            run.load.skip_negotiation = skip;
            run.load.duration = 1.0;
            let result = loadgen::run::run(&run).expect("the run completes");
            assert_eq!(result.summary.errors.total(), 0, "{io:?} skip {skip}");
            assert_eq!(result.summary.connections, 20);
            assert_eq!(result.load.skip_negotiation, skip);
        }
    }
    engine.wait_for_no_connections();
    let fallbacks_only = Engine::start("epoll", &["--transports", "long-polling"]);
    for io in [Io::Auto, Io::Epoll] {
        let mut run = args(&fallbacks_only, Protocol::Hub, None, io, dir.join("f.json"));
        let why = loadgen::run::run(&run).expect_err("WebSockets are not offered");
        assert!(
            format!("{why:#}").contains("20 failed: 20 negotiation"),
            "{io:?}: {why:#}"
        );
        run.load.skip_negotiation = true;
        let why = loadgen::run::run(&run).expect_err("the upgrade is refused");
        assert!(
            format!("{why:#}").contains("20 failed: 20 HTTP 404"),
            "{io:?}: {why:#}"
        );
    }
    fallbacks_only.wait_for_no_connections();
    let _ = std::fs::remove_dir_all(dir);
}

/// --transport sse and longpolling against the engine: negotiation, the
/// handshake over POST, Echo invocations answered on the event stream or
/// on polls, closed loop and paced, every completion checked; the
/// connections end cleanly (a Close message on events, DELETE on polls).
#[test]
fn hub_fallback_transports_are_measured_and_checked() {
    use loadgen::options::{HubEncoding, HubTransport};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-fallback-{}", std::process::id()));
    for backend in ["io-uring", "epoll"] {
        let engine = Engine::start(backend, &["--threads", "2"]);
        for (transport, encoding, rate) in [
            (HubTransport::Sse, HubEncoding::Json, None),
            (HubTransport::Sse, HubEncoding::Json, Some(1000.0)),
            (HubTransport::Longpolling, HubEncoding::Json, None),
            (
                HubTransport::Longpolling,
                HubEncoding::Messagepack,
                Some(1000.0),
            ),
        ] {
            let mut run = args(&engine, Protocol::Hub, rate, Io::Auto, dir.join("f.json"));
            run.load.transport = transport;
            run.load.hub_encoding = encoding;
            run.load.connections = 8;
            run.load.in_flight = 1;
            run.load.duration = 1.0;
            let case = format!("{backend} {transport:?} {encoding:?} {rate:?}");
            let result = loadgen::run::run(&run).expect("the run completes");
            let s = &result.summary;
            assert_eq!(s.errors.total(), 0, "{case}: {:?}", s.errors);
            assert_eq!(s.connections, 8, "{case}");
            assert!(s.messages > 100, "{case}: {} messages", s.messages);
            assert_eq!(
                result.load.io,
                Io::Epoll,
                "{case}: fallbacks run on the epoll client"
            );
            assert!(result.label.contains("over"), "{case}: {}", result.label);
        }
        let stats = engine.wait_for_no_connections();
        let closes = &stats["totals"]["closes"];
        assert_eq!(closes["1006"], 0, "{backend}: {stats}");
        assert_eq!(
            closes["1000"], 32,
            "{backend}: each connection closed cleanly"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// --scenario broadcast against the engine on two workers: the hub's
/// SendToAll in both encodings and over both fallbacks, and the raw
/// broadcast endpoint; every delivery to every connection checked, none
/// missing or duplicated.
#[test]
fn broadcasts_reach_every_connection_across_workers() {
    use loadgen::options::{HubEncoding, HubTransport, Scenario};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-broadcast-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--threads", "2"]);
    for (path, protocol, encoding, transport) in [
        (
            "/hub",
            Protocol::Hub,
            HubEncoding::Json,
            HubTransport::Websockets,
        ),
        (
            "/hub",
            Protocol::Hub,
            HubEncoding::Messagepack,
            HubTransport::Websockets,
        ),
        ("/hub", Protocol::Hub, HubEncoding::Json, HubTransport::Sse),
        (
            "/hub",
            Protocol::Hub,
            HubEncoding::Messagepack,
            HubTransport::Longpolling,
        ),
        (
            "/broadcast",
            Protocol::Raw,
            HubEncoding::Json,
            HubTransport::Websockets,
        ),
    ] {
        let mut run = args(&engine, protocol, Some(200.0), Io::Auto, dir.join("b.json"));
        run.load.url = engine.url(path);
        run.load.hub_encoding = encoding;
        run.load.transport = transport;
        run.load.scenario = Scenario::Broadcast;
        run.load.connections = 20;
        run.load.senders = 3;
        run.load.in_flight = 1;
        run.load.size = 48;
        run.load.duration = 1.0;
        let case = format!("{path} {encoding:?} {transport:?}");
        let result = loadgen::run::run(&run).expect("the broadcast runs");
        let s = &result.summary;
        assert_eq!(s.errors.total(), 0, "{case}: {:?}", s.errors);
        let sent = s.broadcasts_sent.unwrap();
        assert!(sent >= 200, "{case}: {sent} sent");
        // Deliveries in the measured second: about 200 × 20.
        assert!(s.messages > 2000, "{case}: {} deliveries", s.messages);
        assert!(result.label.contains("broadcast"), "{}", result.label);
    }
    let stats = engine.wait_for_no_connections();
    assert_eq!(stats["totals"]["closes"]["1006"], 0, "{stats}");
    let _ = std::fs::remove_dir_all(dir);
}

/// --connection-stages against the engine: a second with no connection
/// sending carries (almost) nothing, the seconds around it carry the load,
/// on both clients, and every connection stays open throughout.
#[test]
fn connection_stages_pause_and_resume_connections() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-cstages-{}", std::process::id()));
    let engine = Engine::start("io-uring", &["--threads", "1"]);
    for io in [Io::Auto, Io::Epoll] {
        let mut run = args(&engine, Protocol::Raw, None, io, dir.join("s.json"));
        run.load.warmup = 0.0;
        run.load.connection_stages = ["0s:20", "1s:20", "0s:0", "1s:0", "0s:10", "1s:10"]
            .map(|s| loadgen::options::ConnectionStage::parse(s).unwrap())
            .to_vec();
        let result = loadgen::run::run(&run).expect("the staged run completes");
        let s = &result.summary;
        assert_eq!(s.errors.total(), 0, "{io:?}: {:?}", s.errors);
        assert_eq!((s.connections, result.load.connections), (20, 20));
        assert_eq!(result.load.mode(), "staged-connections");
        let per_second: Vec<u64> = result.intervals.iter().map(|i| i.messages).collect();
        assert!(per_second.len() >= 3, "{io:?}: {per_second:?}");
        assert!(
            per_second[0] > 1000 && per_second[2] > 1000,
            "{io:?}: {per_second:?}"
        );
        // Only echoes already on their way as the count fell to 0.
        assert!(per_second[1] <= 2 * 20, "{io:?}: {per_second:?}");
        // The plot draws the count beside the throughput.
        let svg = dir.join("stages.svg");
        std::fs::create_dir_all(&dir).unwrap();
        loadgen::plot::plot(std::slice::from_ref(&result), &svg).unwrap();
        assert!(std::fs::read_to_string(&svg)
            .unwrap()
            .contains("connections sending, 20 at the top"));
    }
    engine.wait_for_no_connections();
    let _ = std::fs::remove_dir_all(dir);
}

/// `--payload utf8` and `--payload-file`, echoed by the engine, which
/// checks every text message is UTF-8: every echo comes back exact, on
/// both clients, and the engine counts no close for bad text.
#[test]
fn utf8_text_and_payload_files_echo_exactly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-payloads-{}", std::process::id()));
    let engine = Engine::start("io-uring", &[]);
    common::check_payload_loads(&engine.url("/ws"), &dir, |load| RunArgs {
        load,
        ..args(&engine, Protocol::Raw, None, Io::Auto, dir.join("p.json"))
    });
    engine.wait_for_no_connections();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_bench_takes_its_engine_with_it() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-bench-killed-{}", std::process::id()));
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_ringecho"))
        .args(["bench", "--cases", "small", "--threads", "1", "--quiet"])
        .args([
            "--duration",
            "30",
            "--warmup",
            "0.2",
            "--rate-duration",
            "0",
        ])
        .args([
            "--knee-p99",
            "0",
            "--storm-rate",
            "0",
            "--broadcast-receivers",
            "0",
        ])
        .arg("--out")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The engine under test: the child of bench's main thread.
    let children = format!("/proc/{0}/task/{0}/children", bench.id());
    let started = Instant::now();
    let engine: u32 = loop {
        let listed = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = listed.split_whitespace().next() {
            break pid.parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bench started no engine"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Its load running: the engine has started and been connected to.
    std::thread::sleep(Duration::from_secs(2));
    bench.kill().unwrap();
    bench.wait().unwrap();
    // Gone, or a zombie for init to reap, within its shutdown time.
    let killed = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{engine}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
            break;
        }
        if killed.elapsed() > Duration::from_secs(15) {
            let _ = std::process::Command::new("kill")
                .arg(engine.to_string())
                .status();
            panic!("the engine (pid {engine}) outlived its killed bench by 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_sweeps_configurations_and_writes_tables_plots_and_results() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("ringecho-bench-{}", std::process::id()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringecho"))
        .args([
            "bench",
            "--backend",
            "tokio-uring,epoll",
            "--cases",
            "small",
            // Named below as -t1-: bench's default is half the cores.
            "--threads",
            "1",
        ])
        .args([
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--rate-duration",
            "0.5",
            "--knee-duration",
            "0.3",
            "--knee-max-steps",
            "2",
            "--storm-rate",
            "2000",
            "--storm-connections",
            "300",
            "--storm-limit",
            "200",
            "--hub-transport",
            "websockets,longpolling",
            "--broadcast-receivers",
            "20",
            "--broadcast-deliveries",
            "2000",
            "--quiet",
        ])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("[20/20]"),
        "two configurations × (small raw; small hub in JSON and MessagePack, and in JSON over \
         long polling; broadcast raw and hub in both encodings; constant rate, knee, storm): {stdout}"
    );
    for backend in ["tokio-uring", "epoll"] {
        let knee = dir.join(format!("{backend}-buf4096-t1-small-knee.json"));
        let knee = loadgen::knee::Knee::load(&knee).unwrap();
        // Two steps at most; one when the first already ends the search
        // (loadgen behind on a busy machine, say), which it must say.
        assert!(
            (1..=2).contains(&knee.steps.len()) && !knee.stopped.is_empty(),
            "--knee-max-steps 2: {knee:?}"
        );
        assert!(dir
            .join(format!("{backend}-buf4096-t1-small-knee.svg"))
            .exists());
    }
    let comparison = std::fs::read_to_string(dir.join("raw-vs-signalr.md")).unwrap();
    assert!(
        comparison.contains("| 20 B | 100 | JSON over WebSockets |")
            && comparison.contains("| 20 B | 100 | MessagePack over WebSockets |")
            && comparison.contains("| 20 B | 100 | JSON over long polling |")
            && comparison.contains("| 32 B | 20 | SendToAll, JSON |")
            && comparison.contains("| 32 B | 20 | SendToAll, MessagePack |")
            && comparison.contains("hub/raw throughput"),
        "{comparison}"
    );
    // No delivery missing or duplicated, no echo wrong: every errors cell 0; 0.
    assert!(
        comparison
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains(" B |"))
            .all(|l| l.contains("| 0; 0 |")),
        "{comparison}"
    );
    assert!(dir.join("raw-vs-signalr.svg").exists());
    assert!(dir.join("raw-vs-signalr-broadcast.svg").exists());
    // Raw and MessagePack payloads are bytes, JSON's a string.
    for (job, binary) in [
        ("small", true),
        ("small-hub", false),
        ("small-hub-msgpack", true),
    ] {
        let file = dir.join(format!("epoll-buf4096-t1-{job}.json"));
        let result = loadgen::RunResult::load(&file).unwrap();
        assert_eq!(
            result.load.message_type == loadgen::options::MessageType::Binary,
            binary,
            "{job}"
        );
    }
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        summary.contains("tokio-uring, 4096 B buffers")
            && summary.contains("epoll, 4096 B buffers")
    );
    assert!(
        summary.contains("(1.00×)") && summary.contains("small-rate"),
        "{summary}"
    );
    assert!(summary.contains("The knee"), "{summary}");
    for file in [
        "small.svg",
        "small-rate.svg",
        "small-hub.svg",
        "epoll-buf4096-t1-small.json",
        "epoll-buf4096-t1-small-hub.json",
        "epoll-buf4096-t1-small-hub-msgpack.json",
        "epoll-buf4096-t1-small-hub-longpolling.json",
        "epoll-buf4096-t1-broadcast20.json",
        "epoll-buf4096-t1-broadcast20-hub-msgpack.json",
        "tokio-uring-buf4096-t1-small-rate.hgrm",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let result = RunResult::load(&dir.join("epoll-buf4096-t1-small-rate.json")).unwrap();
    assert!(result.load.rate.is_some() && result.summary.errors.total() == 0);
    // The storms: 300 connections at 2000/s against an engine admitting
    // 200; the rest refused with 503, and nothing else went wrong.
    assert!(
        summary.contains("## Connection storms: 300 connections against an engine admitting 200"),
        "{summary}"
    );
    assert!(dir.join("storms.svg").exists());
    for backend in ["tokio-uring", "epoll"] {
        let storm =
            RunResult::load(&dir.join(format!("{backend}-buf4096-t1-storm-2000.json"))).unwrap();
        let (s, e) = (&storm.summary, &storm.summary.errors);
        assert_eq!(storm.load.connect_rate, Some(2000.0));
        // The start-up read of /stats may still hold one place.
        assert!((199..=200).contains(&s.connections), "{backend}: {e:?}");
        assert_eq!(s.connections + e.connect_failures, 300, "{backend}: {e:?}");
        assert_eq!(
            e.connect_failures_by_kind.get("HTTP 503"),
            Some(&e.connect_failures)
        );
        assert_eq!(e.mismatches + e.unexpected_closes + e.unexpected_frames, 0);
        let achieved = s.connect_rate_achieved().unwrap();
        assert!(achieved > 0.0 && achieved <= 2000.0 * 1.05, "{achieved}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

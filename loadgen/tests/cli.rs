//! The loadgen command line against echo servers it did not write:
//! tokio-tungstenite, honest, corrupting every tenth echo, or slow.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// How the test server answers.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    Honest,
    /// Every tenth data message comes back with one byte flipped.
    Corrupt,
    /// Every echo waits this long first.
    Slow(std::time::Duration),
}

/// Serves each connection with `handle` on a thread of its own; returns
/// the address it listens on.
fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream));
            }
        });
    });
    addr
}

/// A tokio-tungstenite echo server, honest, corrupting or slow.
fn echo_server(behaviour: Server) -> SocketAddr {
    let corrupt = behaviour == Server::Corrupt;
    serve(move |stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let mut n = 0u64;
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Binary(data) => {
                    n += 1;
                    let mut data = data.to_vec();
                    if corrupt && n.is_multiple_of(10) && !data.is_empty() {
                        data[0] ^= 0xFF;
                    }
                    Message::binary(data)
                }
                Message::Text(text) => Message::Text(text),
                Message::Close(_) => break,
                _ => continue,
            };
            if let Server::Slow(delay) = behaviour {
                tokio::time::sleep(delay).await;
            }
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    })
}

/// The tests load the machine's cores: one at a time, so that none makes
/// another's paced sends late (which loadgen rightly flags).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap()
}

fn run(addr: SocketAddr, extra: &[&str], out: &Path) -> Output {
    let url = format!("ws://{addr}/");
    let mut args = vec![
        "run",
        "--url",
        &url,
        "--connections",
        "8",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--quiet",
        "--no-pin",
    ];
    args.extend_from_slice(extra);
    let out = out.to_str().unwrap().to_string();
    args.extend_from_slice(&["--out", &out]);
    loadgen(&args)
}

#[test]
fn an_honest_server_passes_and_results_compare_and_plot() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = echo_server(Server::Honest);
    let files: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| dir.join(format!("{n}.json")).display().to_string())
        .collect();
    for (file, extra) in files.iter().zip([
        &["--size", "20"][..],
        &["--size", "1024"],
        &["--size", "20", "--rate", "500"],
    ]) {
        let output = run(addr, extra, Path::new(file));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("msgs/s") && stdout.contains("p99.99 µs"),
            "{stdout}"
        );
        assert!(
            stdout.contains("server unknown"),
            "not ringecho: no /stats to read: {stdout}"
        );
    }
    let mut compare = vec!["compare"];
    compare.extend(files.iter().map(String::as_str));
    let output = loadgen(&compare);
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("size") && table.contains("rate") && table.contains("(1.00×)"),
        "{table}"
    );

    let svg = dir.join("all.svg").display().to_string();
    let mut plot = vec!["plot"];
    plot.extend(files.iter().map(String::as_str));
    plot.extend(["-o", &svg]);
    assert!(loadgen(&plot).status.success());
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("Throughput"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupting_server_is_caught_and_the_run_fails() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-corrupt-{}", std::process::id()));
    let addr = echo_server(Server::Corrupt);
    // Both clients check every echo: the io_uring loop's and tokio's.
    for io in ["io-uring", "epoll"] {
        let path = dir.join(format!("bad-{io}.json"));
        let output = run(addr, &["--size", "64", "--io", io], &path);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{io}: a run with mismatches exits non-zero"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("mismatched echoes"), "{io}: {stdout}");
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(result["summary"]["errors"]["mismatches"].as_u64().unwrap() > 0);
        assert_eq!(result["load"]["io"], io, "the result says which client ran");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_flags_and_missing_servers_say_what_to_do() {
    let output = loadgen(&["run", "--url", "http://x/", "--duration", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ws://"));
    let output = loadgen(&["run", "--url", "ws://127.0.0.1:1/", "--connections", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
    // TLS options that cannot apply, each one line and status 2.
    for (args, says) in [
        (&["--url", "ws://127.0.0.1:1/", "--insecure"][..], "wss://"),
        (
            &["--url", "wss://127.0.0.1:1/", "--io", "io-uring"],
            "--io epoll",
        ),
        (&["--url", "wss://127.0.0.1:1/", "--deflate"], "ws://"),
        (
            &["--url", "wss://127.0.0.1:1/", "--ca", "/nonexistent.pem"],
            "no such file",
        ),
    ] {
        let output = loadgen(&[&["run"], args].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Payload files that cannot be sent as asked.
    let dir = std::env::temp_dir().join(format!("loadgen-payload-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (text, empty) = (dir.join("text.txt"), dir.join("empty"));
    std::fs::write(&text, "añb€c").unwrap();
    std::fs::write(&empty, "").unwrap();
    let (text, empty) = (text.to_str().unwrap(), empty.to_str().unwrap());
    let url = ["--url", "ws://127.0.0.1:1/"];
    for (args, says) in [
        (vec!["--hub-encoding", "messagepack"], "--protocol hub"),
        (vec!["--connection-stages", "10s:5/s"], "SECS:CONNECTIONS"),
        (vec!["--connection-stages", "10s:2.5"], "SECS:CONNECTIONS"),
        (
            vec!["--connection-stages", "10s:5", "--rate", "100"],
            "cannot be used",
        ),
        (vec!["--connection-stages", "0s:5"], "0 s in all"),
        (vec!["--payload-file", "/nonexistent.bin"], "No such file"),
        (vec!["--payload-file", empty], "1 byte"),
        (
            vec!["--payload-file", text, "--payload", "words"],
            "cannot be used",
        ),
        (
            vec!["--payload-file", text, "--protocol", "hub"],
            "--protocol hub",
        ),
        (
            vec!["--payload-file", text, "--text", "--size", "2"],
            "keeps characters whole",
        ),
    ] {
        let output = loadgen(&[&["run"][..], &url, &args].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
    // Nothing listens on port 1.
    let output = loadgen(&[
        "run",
        "--url",
        "ws://127.0.0.1:1/",
        "--duration",
        "1",
        "--quiet",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is the server running?"));
}

#[test]
fn limits_gate_a_run_and_compare_gates_on_a_baseline() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let honest = echo_server(Server::Honest);
    let slow = echo_server(Server::Slow(std::time::Duration::from_millis(3)));
    let said = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Limits an honest server keeps: status 0, each one said to hold.
    let fast = dir.join("fast.json");
    let output = run(honest, &["--max-p99", "2s", "--min-rate", "10"], &fast);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    assert!(said(&output).contains("limit --max-p99 2000000 µs: held"));
    // A server 3 ms slow breaks a 1 ms median: status 3, and which limit.
    let slowed = dir.join("slow.json");
    let output = run(slow, &["--max-p50", "1ms", "--max-p99", "2s"], &slowed);
    assert_eq!(output.status.code(), Some(3), "{}", said(&output));
    let text = said(&output);
    assert!(text.contains("limit --max-p50 1000 µs: BROKEN"), "{text}");
    assert!(text.contains("limit --max-p99 2000000 µs: held"), "{text}");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&slowed).unwrap()).unwrap();
    assert_eq!(result["limits"][0]["held"], false, "the result records it");

    // Errors: tolerated under --max-error-rate, over --max-errors status 3.
    let corrupt = echo_server(Server::Corrupt);
    let output = run(corrupt, &["--max-error-rate", "50%"], &dir.join("c1.json"));
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let output = run(corrupt, &["--max-errors", "0"], &dir.join("c2.json"));
    assert_eq!(output.status.code(), Some(3), "{}", said(&output));
    assert!(said(&output).contains("limit --max-errors 0: BROKEN"));

    // compare against a baseline: the slow run is a regression of the fast.
    let (fast, slowed) = (fast.display().to_string(), slowed.display().to_string());
    let output = loadgen(&["compare", &fast, &slowed, "--max-regression", "5%"]);
    assert_eq!(output.status.code(), Some(3), "{}", said(&output));
    assert!(said(&output).contains("REGRESSION"), "{}", said(&output));
    let output = loadgen(&["compare", &fast, &fast, "--max-regression", "5%"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    assert!(said(&output).contains("no regression"));
    let output = loadgen(&[
        "compare",
        &fast,
        "--max-regression",
        "5%",
        "--regression-in",
        "p95",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let output = loadgen(&["run", "--url", "ws://127.0.0.1:1/", "--max-p99", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(said(&output).lines().count(), 1, "{}", said(&output));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stages_ramp_the_rate_on_both_clients() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = echo_server(Server::Honest);
    for io in ["io-uring", "epoll"] {
        let path = dir.join(format!("{io}.json"));
        let output = run(addr, &["--io", io, "--stages", "1s:2000/s,1s:0/s"], &path);
        assert!(
            output.status.success(),
            "{io}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // Nothing through the warm-up (no --rate), then up to 2000/s and
        // back down: 1000 + 1000 messages, measured and second by second.
        let measured = result["summary"]["messages"].as_u64().unwrap();
        assert!((1800..=2200).contains(&measured), "{io}: {measured}");
        let seconds: Vec<u64> = result["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["messages"].as_u64().unwrap())
            .collect();
        let total: u64 = seconds.iter().sum();
        assert!((1800..=2200).contains(&total), "{io}: {seconds:?}");
        assert_eq!(result["load"]["duration"], 2.0);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn knee_finds_the_rate_a_server_of_limited_capacity_sustains() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-knee-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 8 connections, each answering one echo at a time 5 ms late: at most
    // 1600 msgs/s, less with timer slack. Beyond it, echoes fall behind.
    let addr = echo_server(Server::Slow(std::time::Duration::from_millis(5)));
    let url = format!("ws://{addr}/");
    let (json, svg) = (dir.join("knee.json"), dir.join("knee.svg"));
    let output = loadgen(&[
        "knee",
        "--url",
        &url,
        "--connections",
        "8",
        "--rate",
        "250",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--max-p99",
        "50ms",
        "--precision",
        "10%",
        "--max-steps",
        "8",
        "--quiet",
        "--no-pin",
        "--out",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{said}");
    let knee: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let held = knee["knee_rate"].as_f64().expect(&said);
    // The bound above: the server's break, or (a busy machine making
    // loadgen's own sends late) loadgen's ceiling, which caps it as well.
    let broke = knee["broke_at"]
        .as_f64()
        .or(knee["loadgen_ceiling"].as_f64())
        .expect(&said);
    assert!((400.0..=1600.0).contains(&held), "knee at {held}\n{said}");
    assert!(broke > held && broke <= 3200.0, "broke at {broke}\n{said}");
    // Doubling from 250, then bisecting: 250, 500, 1000, … each recorded.
    let offered: Vec<f64> = knee["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["offered"].as_f64().unwrap())
        .collect();
    assert_eq!(offered[..3], [250.0, 500.0, 1000.0], "{said}");
    assert!(said.contains("held ← knee"), "{said}");
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("Latency against offered rate"));
    // No latency limit: nothing to find the knee by.
    let output = loadgen(&["knee", "--url", &url]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-p99"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tokio-tungstenite echo server that wants `Authorization: Bearer
/// sesame` (401 otherwise) and speaks the subprotocol "chat" when offered.
fn guarded_server() -> SocketAddr {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    serve(|stream| async move {
        // The callback's error type is tungstenite's, large or not.
        #[allow(clippy::result_large_err)]
        let check = |request: &Request, mut response: Response| {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            if header("authorization").as_deref() != Some("Bearer sesame") {
                let mut refused = ErrorResponse::new(Some("no token".into()));
                *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
                return Err(refused);
            }
            let offered = header("sec-websocket-protocol").unwrap_or_default();
            if offered.split(',').any(|p| p.trim() == "chat") {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", "chat".parse().unwrap());
            }
            Ok(response)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_binary() || message.is_text()) && ws.send(message).await.is_err() {
                break;
            }
        }
    })
}

#[test]
fn headers_origin_and_subprotocols_reach_the_server_and_are_checked() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-headers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = guarded_server();
    let said = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    for io in ["io-uring", "epoll"] {
        let path = dir.join(format!("{io}.json"));
        let token = ["--header", "Authorization: Bearer sesame"];
        let mut ok = vec![
            "--io",
            io,
            "--subprotocol",
            "chat",
            "--origin",
            "http://a.example",
        ];
        ok.extend(token);
        let output = run(addr, &ok, &path);
        assert!(output.status.success(), "{io}: {}", said(&output));
        let recorded = std::fs::read_to_string(&path).unwrap();
        assert!(
            recorded.contains("Authorization: (not recorded)") && !recorded.contains("sesame"),
            "{io}: the token stays out of the result"
        );
        // No token: the server's 401 is the reason given.
        let output = run(addr, &["--io", io], &path);
        assert_eq!(output.status.code(), Some(1), "{io}");
        assert!(said(&output).contains("401"), "{io}: {}", said(&output));
        // A subprotocol the server does not speak: no connection.
        let mut other = vec!["--io", io, "--subprotocol", "superchat"];
        other.extend(token);
        let output = run(addr, &other, &path);
        assert_eq!(output.status.code(), Some(1), "{io}");
        assert!(
            said(&output).contains("accepted none of the offered subprotocols (superchat)"),
            "{io}: {}",
            said(&output)
        );
    }
    let output = run(addr, &["--header", "Origin: x"], &dir.join("x.json"));
    assert_eq!(output.status.code(), Some(2));
    assert!(said(&output).contains("use --origin"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn connections_open_at_the_connect_rate_and_failures_have_kinds() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("loadgen-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = echo_server(Server::Honest);
    for io in ["io-uring", "epoll"] {
        let path = dir.join(format!("{io}.json"));
        let started = std::time::Instant::now();
        // 8 connections (run's) at 20 per second.
        let args = ["--io", io, "--connect-rate", "20"];
        let output = run(addr, &args, &path);
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{io}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // 8 at 20 per second: 0.35 s of opening before 1.2 s of load.
        assert!(
            took >= std::time::Duration::from_millis(1500),
            "{io}: {took:?}"
        );
        assert!(stdout.contains("at 20 per second"), "{io}: {stdout}");
    }
    // Nothing listens on port 1: refused, and counted so.
    let path = dir.join("refused.json");
    let output = loadgen(&[
        "run",
        "--url",
        "ws://127.0.0.1:1/",
        "--connections",
        "5",
        "--connect-rate",
        "50",
        "--duration",
        "1",
        "--quiet",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("refused"));
    std::fs::remove_dir_all(dir).unwrap();
}

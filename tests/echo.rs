//! The engine against a real client (tokio-tungstenite), on every backend.

mod common;

use std::time::{Duration, Instant};

use common::{http_request, Engine};
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const PATIENCE: Duration = Duration::from_secs(10);

async fn connect(engine: &Engine, path: &str) -> Ws {
    let (ws, _) = timeout(PATIENCE, connect_async(engine.url(path)))
        .await
        .expect("handshake in time")
        .expect("handshake accepted");
    ws
}

async fn next(ws: &mut Ws) -> Message {
    timeout(PATIENCE, ws.next())
        .await
        .expect("an answer in time")
        .expect("the connection still open")
        .expect("a valid frame")
}

/// Reads until the server's close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match next(ws).await {
            Message::Close(Some(frame)) => return frame.code.into(),
            Message::Close(None) => return 1005,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

fn raw(data: &[u8], opcode: OpCode, fin: bool) -> Message {
    Message::Frame(Frame::message(data.to_vec(), opcode, fin))
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

async fn echoes_text_and_binary_at_boundary_sizes(backend: &str) {
    // 256 B buffers make every size above 242 B span several reads.
    for buffer in [4096u64, 256] {
        let engine = Engine::start(backend, &["--receive-buffer-size", &buffer.to_string()]);
        let fds_before = fd_count(engine.pid());
        let mut ws = connect(&engine, "/ws").await;
        let sizes = [0usize, 1, 125, 126, 65535, 65536, 1 << 20];
        for size in sizes {
            let binary: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            ws.send(Message::binary(binary.clone())).await.unwrap();
            assert_eq!(
                next(&mut ws).await,
                Message::binary(binary),
                "binary {size}"
            );
            let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(next(&mut ws).await, Message::text(text), "text {size}");
        }
        ws.close(None).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1000);
        let stats = engine.wait_for_no_connections();
        let totals = &stats["totals"];
        assert_eq!(totals["messages_out"], 2 * sizes.len() as u64);
        assert_eq!(totals["bytes_out"], 2 * sizes.iter().sum::<usize>() as u64);
        assert_eq!(
            totals["closes"]["1005"], 1,
            "client sent a close without code"
        );
        assert_eq!(stats["config"]["receive_buffer_size"], buffer);
        // No descriptor outlives its connection.
        let deadline = Instant::now() + PATIENCE;
        while fd_count(engine.pid()) > fds_before {
            assert!(Instant::now() < deadline, "descriptors leaked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn pipelined_messages_come_back_in_order(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut ws = connect(&engine, "/ws").await;
    for i in 0..500u32 {
        let message = if i % 2 == 0 {
            Message::binary(i.to_be_bytes().repeat(i as usize % 40))
        } else {
            Message::text(format!("message {i}"))
        };
        ws.feed(message).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..500u32 {
        let expected = if i % 2 == 0 {
            Message::binary(i.to_be_bytes().repeat(i as usize % 40))
        } else {
            Message::text(format!("message {i}"))
        };
        assert_eq!(next(&mut ws).await, expected);
    }
}

async fn fragmented_messages_are_reassembled(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut ws = connect(&engine, "/ws").await;
    ws.send(raw("hél".as_bytes(), TEXT, false)).await.unwrap();
    ws.send(Message::Frame(Frame::ping(b"between".to_vec())))
        .await
        .unwrap();
    ws.send(raw("lo wörld".as_bytes(), CONTINUE, true))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(b"between".to_vec().into())
    );
    assert_eq!(next(&mut ws).await, Message::text("héllo wörld"));

    // 65 536 fragments of one byte each make one message.
    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    for (i, byte) in payload.iter().enumerate() {
        let opcode = if i == 0 { BINARY } else { CONTINUE };
        ws.feed(raw(&[*byte], opcode, i == payload.len() - 1))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(payload));
}

async fn ping_gets_pong_with_its_payload(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut ws = connect(&engine, "/ws").await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(b"are you there".to_vec().into())
    );
}

async fn close_is_answered_with_the_same_code(backend: &str) {
    let engine = Engine::start(backend, &[]);
    for code in [1000u16, 1001, 3000, 4000] {
        let mut ws = connect(&engine, "/ws").await;
        ws.send(Message::text("before close")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("before close"));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        ws.send(Message::Close(Some(frame))).await.unwrap();
        match next(&mut ws).await {
            Message::Close(Some(reply)) => {
                assert_eq!(u16::from(reply.code), code);
                assert_eq!(reply.reason.as_str(), "bye", "the reason comes back too");
            }
            other => panic!("expected a close, got {other:?}"),
        }
        // Then the server closes the TCP connection.
        assert!(timeout(PATIENCE, ws.next()).await.unwrap().is_none());
    }
    let stats = engine.wait_for_no_connections();
    assert_eq!(stats["totals"]["closes"]["1000"], 1);
    assert_eq!(stats["totals"]["closes"]["other"], 2);
}

async fn invalid_utf8_gets_1007(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut ws = connect(&engine, "/ws").await;
    ws.send(raw(&[b'o', b'k', 0xff, 0xfe], TEXT, true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1007);
    // Fragmented, with the bad byte in the last fragment.
    let mut ws = connect(&engine, "/ws").await;
    ws.send(raw(b"fine so far", TEXT, false)).await.unwrap();
    ws.send(raw(&[0xc3], CONTINUE, true)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1007);
    assert_eq!(
        engine.wait_for_no_connections()["totals"]["closes"]["1007"],
        2
    );
}

async fn oversized_messages_get_1009(backend: &str) {
    let engine = Engine::start(backend, &["--max-message-size", "1000"]);
    let mut ws = connect(&engine, "/ws").await;
    ws.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::binary(vec![7u8; 1000]),
        "the limit itself is fine"
    );
    ws.send(Message::binary(vec![7u8; 1001])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
    // The sum of fragments counts, not each fragment.
    let mut ws = connect(&engine, "/ws").await;
    ws.send(raw(&[1; 600], BINARY, false)).await.unwrap();
    ws.send(raw(&[2; 600], CONTINUE, true)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
}

async fn protocol_violations_get_1002(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut ws = connect(&engine, "/ws").await;
    ws.send(raw(b"nothing to continue", CONTINUE, true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1002);
    let mut ws = connect(&engine, "/ws").await;
    ws.send(raw(b"x", OpCode::Data(Data::Reserved(3)), true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1002);
}

async fn refused_origin_gets_403(backend: &str) {
    let engine = Engine::start(backend, &["--allowed-origin", "https://good.example"]);
    let with_origin = |origin: &str| {
        let mut request = engine.url("/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    match connect_async(with_origin("https://evil.example")).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let (mut ws, _) = connect_async(with_origin("https://good.example"))
        .await
        .unwrap();
    ws.send(Message::text("allowed")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("allowed"));
    // Non-browser clients send no Origin and are allowed.
    connect(&engine, "/ws").await;
    assert_eq!(engine.stats()["totals"]["origins_refused"], 1);
}

async fn permessage_deflate_offers_are_declined(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut request = engine.url("/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (mut ws, response) = connect_async(request).await.unwrap();
    assert!(response.headers().get("Sec-WebSocket-Extensions").is_none());
    ws.send(Message::text("uncompressed")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("uncompressed"));
}

async fn keep_alive_pings_arrive(backend: &str) {
    let engine = Engine::start(backend, &["--keep-alive-interval", "1"]);
    let mut ws = connect(&engine, "/ws").await;
    let started = Instant::now();
    assert!(matches!(next(&mut ws).await, Message::Ping(_)));
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The connection goes on echoing afterwards.
    ws.send(Message::text("still here")).await.unwrap();
    loop {
        match next(&mut ws).await {
            Message::Ping(_) => continue,
            message => break assert_eq!(message, Message::text("still here")),
        }
    }
    assert!(
        engine.stats()["totals"]["keep_alive_pings"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

async fn silent_clients_time_out(backend: &str) {
    let engine = Engine::start(backend, &["--client-timeout", "1"]);
    let mut talking = connect(&engine, "/ws").await;
    let mut silent = connect(&engine, "/ws").await;
    // The talking client keeps sending for 2 s and is never cut off.
    for i in 0..8 {
        talking.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(next(&mut talking).await, Message::text(format!("{i}")));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(close_code(&mut silent).await, 1001);
    assert!(timeout(PATIENCE, silent.next()).await.unwrap().is_none());
    talking.send(Message::text("last")).await.unwrap();
    assert_eq!(next(&mut talking).await, Message::text("last"));
    let stats = engine.stats();
    assert_eq!(stats["totals"]["client_timeouts"], 1);
}

async fn connections_spread_over_every_worker(backend: &str) {
    let engine = Engine::start(backend, &["--threads", "2"]);
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut ws = connect(&engine, "/ws").await;
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("hi"));
        clients.push(ws);
    }
    let stats = engine.stats();
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for worker in workers {
        let open = worker["open_websockets"].as_u64().unwrap();
        assert!(open > 0, "worker {} got no connection", worker["worker"]);
    }
    assert_eq!(stats["totals"]["open_websockets"], 40);
    drop(clients);
    engine.wait_for_no_connections();
}

async fn upgrade_at_root_is_an_echo_too(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut ws = connect(&engine, "/").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1, 2, 3]));
}

async fn http_routes_answer_as_documented(backend: &str) {
    let engine = Engine::start(backend, &[]);
    assert_eq!(engine.get("/healthz").0, 200);
    let (status, body) = engine.get("/ws");
    assert_eq!(status, 400);
    assert_eq!(body.lines().count(), 1, "one-line body: {body:?}");
    assert_eq!(engine.get("/nowhere").0, 404);
    let (status, page) = engine.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("ringecho"));
    let stats = engine.stats();
    assert_eq!(stats["backend"], backend);
    assert!(stats["commit"].is_string() && stats["version"].is_string());
    assert_eq!(stats["config"]["keep_alive_interval"], 120);

    let upgrade = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (status, _) = http_request(
        engine.addr,
        &upgrade(&format!("{key}Sec-WebSocket-Version: 8\r\n")),
    );
    assert_eq!(status, 426, "unsupported version");
    let (status, _) = http_request(engine.addr, &upgrade("Sec-WebSocket-Version: 13\r\n"));
    assert_eq!(status, 400, "missing key");
    assert!(engine.stats()["totals"]["bad_requests"].as_u64().unwrap() >= 3);
}

async fn shutdown_sends_1001_and_exits_0(backend: &str) {
    let mut engine = Engine::start(backend, &[]);
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut ws = connect(&engine, "/ws").await;
        ws.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(format!("{i}")));
        clients.push(ws);
    }
    unsafe { libc::kill(engine.pid(), libc::SIGTERM) };
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, 1001);
    }
    let status = engine.wait(PATIENCE).expect("exited");
    assert!(status.success(), "exit status {status}");
}

async fn shutdown_does_not_wait_past_its_timeout(backend: &str) {
    let mut engine = Engine::start(backend, &["--shutdown-timeout", "1"]);
    // A client that completes the upgrade, then never reads nor answers.
    let mut stream = std::net::TcpStream::connect(engine.addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
    let started = Instant::now();
    let status = engine.terminate(PATIENCE);
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod io_uring {
            $(#[tokio::test] async fn $test() { super::$test("io-uring").await })*
        }
        mod tokio_uring {
            $(#[tokio::test] async fn $test() { super::$test("tokio-uring").await })*
        }
        mod epoll {
            $(#[tokio::test] async fn $test() { super::$test("epoll").await })*
        }
    };
}

on_every_backend!(
    echoes_text_and_binary_at_boundary_sizes,
    pipelined_messages_come_back_in_order,
    fragmented_messages_are_reassembled,
    ping_gets_pong_with_its_payload,
    close_is_answered_with_the_same_code,
    invalid_utf8_gets_1007,
    oversized_messages_get_1009,
    protocol_violations_get_1002,
    refused_origin_gets_403,
    permessage_deflate_offers_are_declined,
    keep_alive_pings_arrive,
    silent_clients_time_out,
    connections_spread_over_every_worker,
    upgrade_at_root_is_an_echo_too,
    http_routes_answer_as_documented,
    shutdown_sends_1001_and_exits_0,
    shutdown_does_not_wait_past_its_timeout,
);

/// Zero-copy sends on the native ring (`--send-zc-min 1`: every send is
/// one): messages of every size, echoed from a provided buffer (a registered
/// buffer) or assembled (memory of their own), and pipelined ones whose
/// echoes leave in one vectored send, all come back whole, and the
/// connection ends cleanly.
#[tokio::test]
async fn zero_copy_sends_echo_every_message() {
    for buffer in ["4096", "256"] {
        let engine = Engine::start(
            "io-uring",
            &["--send-zc-min", "1", "--receive-buffer-size", buffer],
        );
        let mut ws = connect(&engine, "/ws").await;
        for size in [0usize, 1, 125, 126, 4000, 65536, 1 << 20] {
            let binary: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            ws.send(Message::binary(binary.clone())).await.unwrap();
            assert_eq!(
                next(&mut ws).await,
                Message::binary(binary),
                "{size} B, {buffer} B buffers"
            );
        }
        for i in 0..300u32 {
            ws.feed(Message::binary(i.to_be_bytes().repeat(i as usize % 50)))
                .await
                .unwrap();
        }
        ws.flush().await.unwrap();
        for i in 0..300u32 {
            assert_eq!(
                next(&mut ws).await,
                Message::binary(i.to_be_bytes().repeat(i as usize % 50))
            );
        }
        ws.close(None).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1000);
        let stats = engine.wait_for_no_connections();
        assert_eq!(stats["totals"]["messages_out"], 7 + 300);
    }
}

#[test]
fn bad_flags_get_one_line_and_status_2() {
    for args in [
        &["--threads", "zero"][..],
        &["--receive-buffer-size", "10"],
        &["--no-such-flag"],
        &["--backend", "kqueue"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringecho"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("ringecho: "), "{stderr}");
    }
}

#[test]
fn help_lists_every_option_with_its_default() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringecho"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--listen",
        "--threads",
        "--no-pin",
        "--backend",
        "--ws-path",
        "--keep-alive-interval",
        "--receive-buffer-size",
        "--send-zc-min",
        "--allowed-origin",
        "--client-timeout",
        "--max-message-size",
        "--shutdown-timeout",
        "--handshake-timeout",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    assert!(help.contains("[default: 127.0.0.1:8080]"));
    assert!(help.contains("[default: 4096]"));
}

#[test]
fn a_busy_port_is_refused_with_status_1() {
    let first = Engine::start("epoll", &[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringecho"))
        .args(["--listen", &first.addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already in use"));
}

#[test]
fn startup_line_names_address_backend_threads_and_buffer() {
    let engine = Engine::start(
        "epoll",
        &["--threads", "2", "--receive-buffer-size", "8192"],
    );
    let line = &engine.startup_line;
    assert!(line.contains(&engine.addr.to_string()), "{line}");
    assert!(
        line.contains("backend epoll") && line.contains("2 threads"),
        "{line}"
    );
    assert!(line.contains("receive buffer 8192 B"), "{line}");
    // Scripts ask for the same facts as one JSON object.
    let json = Engine::start(
        "io-uring",
        &[
            "--threads",
            "2",
            "--startup-line",
            "json",
            "--ws-path",
            "/echo",
        ],
    );
    let startup: serde_json::Value = serde_json::from_str(&json.startup_line).unwrap();
    assert_eq!(startup["listen"], json.addr.to_string());
    assert_eq!(startup["backend"], "io-uring");
    assert_eq!(startup["threads"], 2);
    assert_eq!(startup["ws_path"], "/echo");
    assert_eq!(startup["receive_buffer_size"], 4096);
}

/// The engine keeps off transparent huge pages unless asked: its resident
/// memory is then what it uses (the allocator asks for huge pages on its
/// arenas, and a few live bytes kept whole 2 MiB pages resident). What the
/// allocator touched before `main` may already sit on huge pages; nothing
/// after it does, echoes of up to 1 MiB included.
#[tokio::test]
async fn the_engine_keeps_off_transparent_huge_pages_unless_asked() {
    let status_line = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        (status.lines())
            .find(|l| l.starts_with("THP_enabled:"))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .expect("THP_enabled in /proc/PID/status (Linux 5.0 and later)")
    };
    let huge_kib = |pid: i32| -> u64 {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        (rollup.lines())
            .find(|l| l.starts_with("AnonHugePages:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .expect("AnonHugePages in smaps_rollup")
    };
    for backend in common::BACKENDS {
        let engine = Engine::start(backend, &[]);
        assert_eq!(status_line(engine.pid()), "0", "{backend}");
        let before = huge_kib(engine.pid());
        let mut ws = connect(&engine, "/ws").await;
        for size in [20, 1 << 10, 1 << 16, 1 << 20] {
            ws.send(Message::binary(vec![7u8; size])).await.unwrap();
            assert_eq!(next(&mut ws).await.len(), size);
        }
        assert_eq!(
            huge_kib(engine.pid()),
            before,
            "{backend}: KiB on huge pages"
        );
        ws.close(None).await.unwrap();
    }
    let engine = Engine::start("io-uring", &["--transparent-huge-pages"]);
    assert_eq!(status_line(engine.pid()), "1", "asked for");
}

#[test]
fn sigterm_right_after_startup_exits_0() {
    for backend in common::BACKENDS {
        let mut engine = Engine::start(backend, &[]);
        let status = engine.terminate(PATIENCE);
        assert!(status.success(), "{backend}: exit status {status}");
    }
}

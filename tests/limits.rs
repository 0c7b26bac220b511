//! Limits and hostile clients: the connection cap, slow and oversized HTTP,
//! clients that stop reading. Each on every backend; the engine must answer
//! clearly, keep serving everyone else, and count its connections back to zero.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http_request, raw_websocket_at, Engine, BACKENDS, UPGRADE};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error, Message};

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    // A zero mask leaves the payload as is.
    ringecho::codec::encode_masked(true, opcode, payload, [0; 4])
}

#[tokio::test]
async fn beyond_max_connections_new_clients_get_503_and_the_rest_carry_on() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--max-connections", "3"]);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                tokio_tungstenite::connect_async(engine.url("/ws"))
                    .await
                    .unwrap()
                    .0,
            );
        }
        match tokio_tungstenite::connect_async(engine.url("/ws")).await {
            Err(Error::Http(response)) => assert_eq!(response.status(), 503, "{backend}"),
            other => panic!("{backend}: expected 503, got {other:?}"),
        }
        // Those already in are untouched.
        held[0].send(Message::text("still served")).await.unwrap();
        assert_eq!(
            held[0].next().await.unwrap().unwrap(),
            Message::text("still served")
        );
        // A place frees up when one leaves.
        held.pop().unwrap().close(None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ws = loop {
            match tokio_tungstenite::connect_async(engine.url("/ws")).await {
                Ok((ws, _)) => break ws,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{backend}: no place freed: {e}"),
            }
        };
        ws.send(Message::text("in again")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("in again"));
        drop((held, ws));
        // /stats itself needs a place: wait until one is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let (status, body) = engine.get("/stats");
            if status == 200 {
                break serde_json::from_str::<serde_json::Value>(&body).unwrap()["totals"]
                    ["refused"]
                    .clone();
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(refused.as_u64().unwrap() >= 1);
        engine.wait_for_no_connections();
    }
}

#[test]
fn slow_oversized_and_malformed_requests_never_reach_the_echo() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--handshake-timeout", "1"]);
        // Slowloris: headers that never end are cut off.
        let mut slow = TcpStream::connect(engine.addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{backend}: held {:?}",
            started.elapsed()
        );
        // Headers over 16 KiB: 431.
        let huge = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        assert_eq!(http_request(engine.addr, &huge).0, 431, "{backend}");
        // A request line that is not HTTP: 400.
        assert_eq!(
            http_request(engine.addr, "HELLO THERE\r\n\r\n").0,
            400,
            "{backend}"
        );
        let stats = engine.wait_for_no_connections();
        assert_eq!(
            stats["totals"]["upgraded"], 0,
            "{backend}: nothing reached the echo"
        );
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_client_timeout() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--client-timeout", "1"]);
        let mut stream = engine.raw_websocket();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Send 1 MiB messages and never read the echoes: both directions fill.
        let frame = masked(2, &vec![7u8; 1 << 20]);
        let started = Instant::now();
        while stream.write_all(&frame).is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{backend}: never closed"
            );
        }
        let stats = engine.wait_for_no_connections();
        assert!(
            stats["totals"]["client_timeouts"].as_u64().unwrap() >= 1,
            "{backend}"
        );
    }
}

#[test]
fn a_hub_client_that_does_not_read_its_broadcasts_gets_1008() {
    for backend in BACKENDS {
        let engine = Engine::start(
            backend,
            &["--max-pending-bytes", "262144", "--threads", "1"],
        );
        let hub_upgrade = UPGRADE.replace("GET /ws", "GET /hub");
        let mut deaf = raw_websocket_at(engine.addr, &hub_upgrade);
        deaf.write_all(&masked(1, b"{\"protocol\":\"json\",\"version\":1}\x1e"))
            .unwrap();
        let mut sender = raw_websocket_at(engine.addr, &hub_upgrade);
        sender
            .write_all(&masked(1, b"{\"protocol\":\"json\",\"version\":1}\x1e"))
            .unwrap();
        // 64 KiB broadcasts without invocation ids (no answers to read):
        // the deaf client's socket buffers fill, then its mailbox overflows.
        let big = format!(
            "{{\"type\":1,\"target\":\"SendToAll\",\"arguments\":[\"{}\"]}}\x1e",
            "x".repeat(64 * 1024)
        );
        let frame = masked(1, big.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = engine.stats();
            if stats["totals"]["overflows"].as_u64().unwrap() >= 1 {
                assert!(stats["totals"]["closes"]["1008"].as_u64().unwrap() >= 1);
                break;
            }
            assert!(Instant::now() < deadline, "{backend}: no overflow");
            // One at a time, and the sender reads its own Receive copy back
            // so that only the deaf client falls behind.
            sender.write_all(&frame).unwrap();
            let mut copy = vec![0u8; frame.len()];
            sender.read_exact(&mut copy[..64 * 1024]).unwrap();
            sender.set_nonblocking(true).unwrap();
            while sender.read(&mut copy).is_ok_and(|n| n > 0) {}
            sender.set_nonblocking(false).unwrap();
        }
        drop((deaf, sender));
        engine.wait_for_no_connections();
    }
}

#[test]
fn a_peer_that_never_answers_our_close_is_cut_off() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &[]);
        let mut stream = engine.raw_websocket();
        // An unmasked frame: a protocol error, so the engine closes (1002)...
        stream.write_all(&[0x82, 0x02, b'n', b'o']).unwrap();
        let started = Instant::now();
        let mut close = [0u8; 4];
        stream.read_exact(&mut close).unwrap();
        assert_eq!(&close[..1], &[0x88], "{backend}: a close frame");
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
        // ...and since we never answer, it hangs up on its own.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{backend}: held {:?}",
            started.elapsed()
        );
        engine.wait_for_no_connections();
    }
}

#[test]
fn running_out_of_descriptors_never_stops_accepting() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    for backend in BACKENDS {
        // An engine allowed 128 descriptors, told to take 1 000 connections.
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringecho"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--backend",
                backend,
                "--max-connections",
                "1000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 128,
                    rlim_max: 128,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr = common::startup_address(&line);
        // The engine logs its first failed accept: that is the moment.
        let (failed, accept_failed) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                if line.is_ok_and(|l| l.contains("accept failed")) {
                    let _ = failed.send(());
                }
            }
        });
        // More clients than descriptors: the kernel queues them; accept fails.
        let crowd: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        accept_failed
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!("{backend}: no accept failed with 200 clients and 128 descriptors")
            });
        drop(crowd);
        // Once they are gone the engine serves again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stats = loop {
            match std::panic::catch_unwind(|| {
                http_request(
                    addr,
                    "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            }) {
                Ok((200, body)) => break serde_json::from_str::<serde_json::Value>(&body).unwrap(),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                _ => panic!("{backend}: the engine never recovered"),
            }
        };
        assert!(
            stats["totals"]["accept_errors"].as_u64().unwrap() > 0,
            "{backend}: EMFILE was hit"
        );
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success(), "{backend}");
    }
}

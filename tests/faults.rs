//! Faults: TCP resets at every stage of a connection, and SIGTERM under
//! load. Nothing may panic, leak a descriptor or a count, or deliver a
//! damaged message.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Engine, BACKENDS, UPGRADE};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Closes with RST instead of FIN: linger on, timeout zero.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn resets_at_every_stage_leak_nothing() {
    for backend in BACKENDS {
        let engine = Engine::start(backend, &["--receive-buffer-size", "4096"]);
        let fds_before = fd_count(engine.pid());
        for _ in 0..20 {
            // During the HTTP request.
            let mut s = TcpStream::connect(engine.addr).unwrap();
            s.write_all(&UPGRADE.as_bytes()[..30]).unwrap();
            reset(s);
            // In the middle of a frame header.
            let mut s = engine.raw_websocket();
            s.write_all(&[0x82]).unwrap();
            reset(s);
            // In the middle of a payload that spans receive buffers.
            let mut s = engine.raw_websocket();
            s.write_all(&[0x82, 0xFE, 0x27, 0x10, 0, 0, 0, 0]).unwrap(); // 10 000 bytes announced
            s.write_all(&[1u8; 5000]).unwrap();
            reset(s);
            // During the close handshake.
            let mut s = engine.raw_websocket();
            s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).unwrap();
            reset(s);
            // With echoes still on their way back.
            let mut s = engine.raw_websocket();
            for _ in 0..50 {
                s.write_all(&[0x82, 0xFE, 0x04, 0x00, 0, 0, 0, 0]).unwrap();
                s.write_all(&[9u8; 1024]).unwrap();
            }
            reset(s);
        }
        let stats = engine.wait_for_no_connections();
        assert_eq!(stats["totals"]["open_websockets"], 0, "{backend}");
        assert_eq!(stats["totals"]["upgraded"], 80, "{backend}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fd_count(engine.pid()) > fds_before {
            assert!(Instant::now() < deadline, "{backend}: descriptors leaked");
            std::thread::sleep(Duration::from_millis(20));
        }
        // And it still serves.
        let mut s = engine.raw_websocket();
        s.write_all(&[0x82, 0x82, 0, 0, 0, 0, b'o', b'k']).unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(echo, [0x82, 2, b'o', b'k'], "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_sends_1001_to_every_client_and_exits_0() {
    const CLIENTS: usize = 1000;
    for backend in BACKENDS {
        let mut engine = Engine::start(backend, &["--shutdown-timeout", "5"]);
        let echoed = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::with_capacity(CLIENTS);
        for id in 0..CLIENTS {
            let (ws, _) = tokio_tungstenite::connect_async(engine.url("/ws"))
                .await
                .unwrap();
            let echoed = echoed.clone();
            clients.push(tokio::spawn(async move {
                let mut ws = ws;
                let mut n = 0u64;
                loop {
                    let sent = format!("{id}:{n}:{}", "x".repeat((n % 300) as usize));
                    if ws.send(Message::text(sent.clone())).await.is_err() {
                        return Err(format!("client {id}: send failed before any close"));
                    }
                    match ws.next().await {
                        Some(Ok(Message::Text(text))) if text.as_str() == sent => {
                            echoed.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(Message::Close(Some(frame)))) => return Ok(u16::from(frame.code)),
                        other => {
                            return Err(format!("client {id}: damaged or missing echo: {other:?}"))
                        }
                    }
                    n += 1;
                }
            }));
        }
        // Let every connection echo for a while, then stop the engine.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            echoed.load(Ordering::Relaxed) > CLIENTS,
            "{backend}: the load is running"
        );
        let stopped = Instant::now();
        unsafe { libc::kill(engine.pid(), libc::SIGTERM) };
        for client in clients {
            let code = tokio::time::timeout(Duration::from_secs(10), client)
                .await
                .expect("every client hears the close")
                .unwrap();
            assert_eq!(code, Ok(1001), "{backend}");
        }
        let status = tokio::task::spawn_blocking(move || engine.wait(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the engine exited");
        assert!(status.success(), "{backend}: {status}");
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "{backend}: took {:?}",
            stopped.elapsed()
        );
    }
}

//! The closing handshake on the wire, on every backend (RFC 6455 §5.5.1,
//! §7.1.1): once the engine has both sent and received a close, it closes
//! the TCP connection at once, whether the conversation ended normally or
//! the engine failed it. Autobahn's reference suite counts a server that
//! waits for the client to drop the connection as failed; these tests catch
//! that with a raw socket, which sees exactly when the engine's EOF comes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Engine, BACKENDS};
use ringecho::codec::encode_masked;

/// How soon the engine's EOF must follow the close handshake.
const AT_ONCE: Duration = Duration::from_millis(100);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_masked(fin, opcode, payload, MASK)
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(true, 8, &payload)
}

/// Reads one unmasked server frame: (first byte, payload).
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream
        .read_exact(&mut head)
        .expect("a frame from the engine");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

/// Reads frames until the engine's close, and returns its code.
fn read_close(stream: &mut TcpStream) -> u16 {
    loop {
        let (b0, payload) = read_frame(stream);
        if b0 & 0x0F == 8 {
            assert_eq!(b0, 0x88, "a final close frame");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// Waits for the engine to close the connection and returns how long it
/// took. Anything but EOF (more frames, a reset) fails the test.
fn time_to_eof(stream: &mut TcpStream) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the engine kept the connection open for 3 s after the close handshake")
        }
        Err(e) => panic!("the connection ended with {e}, not EOF"),
    }
    start.elapsed()
}

/// Each class of violation Autobahn sends (cases 2.5, 3.*, 4.*, 5.1, 5.2,
/// 7.3.6), with the close code the engine must answer with.
fn violations() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut rsv1 = frame(true, 1, b"hello");
    rsv1[0] |= 0x40;
    let mut rsv3_ping = frame(true, 9, b"");
    rsv3_ping[0] |= 0x10;
    vec![
        (
            "2.5 ping over 125 bytes",
            frame(true, 9, &[0xfe; 126]),
            1002,
        ),
        ("3.1 reserved bit on text", rsv1, 1002),
        ("3.7 reserved bit on ping", rsv3_ping, 1002),
        ("4.1.1 reserved data opcode 3", frame(true, 3, b""), 1002),
        (
            "4.1.5 reserved data opcode 7",
            frame(true, 7, b"hello"),
            1002,
        ),
        (
            "4.2.1 reserved control opcode 11",
            frame(true, 11, b""),
            1002,
        ),
        (
            "4.2.5 reserved control opcode 15",
            frame(true, 15, b"hello"),
            1002,
        ),
        ("5.1 fragmented ping", frame(false, 9, b"frag"), 1002),
        ("5.2 fragmented pong", frame(false, 10, b"frag"), 1002),
        (
            "7.3.6 close reason over 123 bytes",
            close_frame(1000, &[b'*'; 124]),
            1002,
        ),
        (
            "6.x invalid UTF-8",
            frame(true, 1, &[0xce, 0xba, 0xc0, 0xaf]),
            1007,
        ),
        (
            "message over --max-message-size",
            frame(true, 2, &[0; 2000]),
            1009,
        ),
        ("continuation without a message", frame(true, 0, b"x"), 1002),
    ]
}

fn engine_fails_then_client_closes(backend: &str) {
    let engine = Engine::start(backend, &["--max-message-size", "1024"]);
    for (class, bad, code) in violations() {
        let mut ws = engine.raw_websocket();
        ws.write_all(&bad).unwrap();
        // A bad close frame is still the client's close: the handshake is
        // complete once the engine answers, so the engine ends the
        // connection then, and the client has nothing more to send.
        let client_already_closed = bad[0] & 0x0f == 8;
        if !client_already_closed {
            // A valid message after the violation: the engine must not
            // echo anything once it failed the connection.
            ws.write_all(&frame(true, 2, b"after")).unwrap();
        }
        assert_eq!(read_close(&mut ws), code, "{backend}: {class}");
        if !client_already_closed {
            ws.write_all(&close_frame(code, b""))
                .unwrap_or_else(|e| panic!("{backend}: {class}: the client's close: {e}"));
        }
        let took = time_to_eof(&mut ws);
        assert!(
            took < AT_ONCE,
            "{backend}: {class}: EOF {took:?} after the client's close (RFC 6455 §7.1.1: at once)"
        );
    }
    engine.wait_for_no_connections();
}

fn client_closes_first(backend: &str) {
    let engine = Engine::start(backend, &[]);
    for (code, reason) in [(1000u16, &b"bye"[..]), (1001, b""), (4000, b"custom")] {
        let mut ws = engine.raw_websocket();
        ws.write_all(&frame(true, 1, b"one last message")).unwrap();
        ws.write_all(&close_frame(code, reason)).unwrap();
        let (b0, echo) = read_frame(&mut ws);
        assert_eq!((b0, &echo[..]), (0x81, &b"one last message"[..]));
        assert_eq!(read_close(&mut ws), code, "{backend}: the same code back");
        let took = time_to_eof(&mut ws);
        assert!(
            took < AT_ONCE,
            "{backend}: EOF {took:?} after answering close {code}"
        );
    }
    // A close without a code is answered with 1000, then EOF at once.
    let mut ws = engine.raw_websocket();
    ws.write_all(&frame(true, 8, b"")).unwrap();
    assert_eq!(read_close(&mut ws), 1000);
    assert!(time_to_eof(&mut ws) < AT_ONCE);
    engine.wait_for_no_connections();
}

/// Autobahn 6.4.3 and 6.4.4: a text frame sent in chops fails at the chop
/// that holds the bad sequence, while the rest of the frame is still to come.
fn invalid_utf8_fails_at_the_chop(backend: &str) {
    let engine = Engine::start(backend, &[]);
    let mut text = "κόσμε".as_bytes().to_vec();
    let bad = text.len() + 1; // 0xf4 0x90: above U+10FFFF
    text.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
    text.extend_from_slice(b"edited");
    let message = frame(true, 1, &text);
    let header = message.len() - text.len();
    let mut ws = engine.raw_websocket();
    for byte in &message[..header + bad + 1] {
        ws.write_all(std::slice::from_ref(byte)).unwrap();
    }
    ws.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(
        read_close(&mut ws),
        1007,
        "{backend}: 1007 before the frame is whole"
    );
    ws.write_all(&close_frame(1007, b"")).unwrap();
    assert!(time_to_eof(&mut ws) < AT_ONCE);
    engine.wait_for_no_connections();
}

#[test]
fn after_a_violation_the_clients_close_ends_the_connection_at_once() {
    for backend in BACKENDS {
        engine_fails_then_client_closes(backend);
    }
}

#[test]
fn after_the_clients_close_the_engine_answers_and_ends_the_connection_at_once() {
    for backend in BACKENDS {
        client_closes_first(backend);
    }
}

#[test]
fn invalid_utf8_in_chops_of_one_frame_fails_at_the_bad_chop() {
    for backend in BACKENDS {
        invalid_utf8_fails_at_the_chop(backend);
    }
}

//! permessage-deflate (RFC 7692) on every backend: Node's ws client (its
//! zlib, its negotiation) echoes compressible and incompressible messages
//! through each way of offering it, and raw frames check what a client
//! library would hide: the answer's parameters, RSV1 on the echo, the
//! inflated-size limit, and the violations.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{Engine, BACKENDS};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use ringecho::codec::encode_masked;

const MASK: [u8; 4] = [0x0d, 0xe1, 0x7a, 0x55];

fn node_ws(engine: &Engine, options: &str) -> serde_json::Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deflate");
    assert!(
        std::path::Path::new(dir).join("node_modules/ws").exists(),
        "Node's ws is not installed: run scripts/test.sh (it runs npm ci in tests/deflate)"
    );
    let output = Command::new("node")
        .arg(format!("{dir}/client.js"))
        .arg(engine.url("/ws"))
        .arg(options)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "client.js printed no result ({e}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn node_ws_echoes_through_every_offer_in_both_modes() {
    let offers = [
        "true",
        r#"{"serverNoContextTakeover":true}"#,
        r#"{"serverMaxWindowBits":10}"#,
        r#"{"clientNoContextTakeover":true,"clientMaxWindowBits":9}"#,
        "false",
    ];
    for backend in BACKENDS {
        for mode in ["dedicated", "shared", "off"] {
            let engine = Engine::start(backend, &["--deflate", mode]);
            for offer in offers {
                let result = node_ws(&engine, offer);
                let context = format!("{backend}, --deflate {mode}, offer {offer}: {result}");
                assert_eq!(result["echoed"], result["sent"], "{context}");
                assert_eq!(result["mismatches"], serde_json::json!([]), "{context}");
                assert_eq!(result["close"], 1000, "{context}");
                let agreed = result["extensions"] == "permessage-deflate";
                assert_eq!(agreed, mode != "off" && offer != "false", "{context}");
            }
            let stats = engine.wait_for_no_connections();
            assert_eq!(stats["totals"]["deflate_sessions"], 0, "{backend} {mode}");
            assert_eq!(
                stats["totals"]["deflate_context_bytes"], 0,
                "{backend} {mode}"
            );
        }
    }
}

/// Opens a WebSocket at /ws with `extensions` offered; returns the stream
/// and the answer's Sec-WebSocket-Extensions, if any.
fn open(engine: &Engine, extensions: &str) -> (TcpStream, Option<String>) {
    let mut stream = TcpStream::connect(engine.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_string())
    });
    (stream, answer)
}

/// Raw DEFLATE with a sync flush, its 00 00 ff ff tail removed (RFC 7692 §7.2.1).
fn compress(data: &[u8]) -> Vec<u8> {
    let mut deflate = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    loop {
        let before = deflate.total_in() as usize;
        deflate
            .compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if deflate.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflate = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    inflate
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// Reads one server frame: (first byte, payload).
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
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

fn close_code(stream: &mut TcpStream) -> u16 {
    let (b0, payload) = read_frame(stream);
    assert_eq!(b0, 0x88, "a close frame");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// A compressed frame: RSV1 on `compressed` data, masked.
fn compressed_frame(fin: bool, opcode: u8, compressed: &[u8]) -> Vec<u8> {
    let mut frame = encode_masked(fin, opcode, compressed, MASK);
    frame[0] |= 0x40;
    frame
}

#[test]
fn the_answer_echo_limits_and_violations_on_the_wire() {
    for backend in BACKENDS {
        let engine = Engine::start(
            backend,
            &["--deflate", "dedicated", "--max-message-size", "1048576"],
        );
        // The answer names what was agreed, and only that.
        let (_, answer) = open(
            &engine,
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        );
        assert_eq!(
            answer.as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        let (_, answer) = open(&engine, "permessage-deflate; unknown_parameter");
        assert_eq!(answer, None, "{backend}: a bad offer is declined");

        // A compressed message comes back compressed (RSV1), and inflates to
        // what was sent; an uncompressed one comes back as it was.
        let (mut ws, _) = open(&engine, "permessage-deflate");
        let text = "compressible, compressible, compressible ".repeat(100);
        ws.write_all(&compressed_frame(true, 1, &compress(text.as_bytes())))
            .unwrap();
        let (b0, payload) = read_frame(&mut ws);
        assert_eq!(b0, 0xC1, "{backend}: FIN, RSV1, text");
        assert!(payload.len() < text.len() / 4, "{backend}: compressed");
        assert_eq!(inflate(&payload), text.as_bytes(), "{backend}");
        ws.write_all(&encode_masked(true, 2, b"plain", MASK))
            .unwrap();
        assert_eq!(read_frame(&mut ws), (0x82, b"plain".to_vec()), "{backend}");
        // A compressed message in fragments: RSV1 on the first only.
        let data = compress(&[b'z'; 5000]);
        let (a, b) = data.split_at(data.len() / 2);
        ws.write_all(&compressed_frame(false, 2, a)).unwrap();
        ws.write_all(&encode_masked(true, 0, b, MASK)).unwrap();
        let (b0, payload) = read_frame(&mut ws);
        assert_eq!((b0, inflate(&payload)), (0xC2, vec![b'z'; 5000]));
        // The sessions' own contexts are counted while they are open: this
        // one, once the engine has seen the first connection (dropped
        // above, a deflate session too) close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let stats = loop {
            let stats = engine.stats();
            if stats["totals"]["deflate_sessions"] == 1 || std::time::Instant::now() > deadline {
                break stats;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(stats["totals"]["deflate_sessions"], 1, "{backend}");
        assert!(
            stats["totals"]["deflate_context_bytes"].as_u64().unwrap() > 200_000,
            "{backend}: {}",
            stats["totals"]
        );
        drop(ws);

        // 64 MiB of zeros, 1 MiB allowed: refused inflated, not compressed.
        let (mut ws, _) = open(&engine, "permessage-deflate");
        let bomb = compress(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20, "the compressed bomb fits the limit");
        ws.write_all(&compressed_frame(true, 2, &bomb)).unwrap();
        assert_eq!(close_code(&mut ws), 1009, "{backend}: a zip bomb");
        // RSV1 where RFC 7692 §6.1 forbids it, and data that does not inflate.
        for (what, frame, code) in [
            (
                "RSV1 on a continuation",
                {
                    let mut frames = compressed_frame(false, 1, &compress(b"a"));
                    frames.extend(compressed_frame(true, 0, &compress(b"b")));
                    frames
                },
                1002,
            ),
            ("RSV1 on a ping", compressed_frame(true, 9, b""), 1002),
            (
                "not DEFLATE data",
                compressed_frame(true, 2, &[0xff; 40]),
                1007,
            ),
        ] {
            let (mut ws, _) = open(&engine, "permessage-deflate");
            ws.write_all(&frame).unwrap();
            assert_eq!(close_code(&mut ws), code, "{backend}: {what}");
        }
        // Without an agreement RSV1 is a violation, as before.
        let (mut ws, answer) = open(&engine, "x-unknown-extension");
        assert_eq!(answer, None);
        ws.write_all(&compressed_frame(true, 1, &compress(b"hi")))
            .unwrap();
        assert_eq!(close_code(&mut ws), 1002, "{backend}");
        drop(ws);
        let stats = engine.wait_for_no_connections();
        assert_eq!(stats["totals"]["deflate_context_bytes"], 0, "{backend}");
    }
}

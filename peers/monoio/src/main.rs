//! Peer baseline: fastwebsockets on monoio, one thread on its own io_uring
//! (monoio's IoUringDriver). monoio's reads and writes own their buffers;
//! fastwebsockets speaks tokio's AsyncRead/AsyncWrite, so the stream goes
//! through monoio-compat's StreamWrapper, the adapter monoio documents for
//! tokio-style libraries (it copies through a buffer of its own). The opening
//! handshake is read with monoio's own calls and parsed with httparse; then a
//! FragmentCollector echoes text and binary messages, as fastwebsockets' own
//! echo example does. Usage: peer-monoio [ADDR] (default 127.0.0.1:8080).

use base64::Engine as _;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use sha1::{Digest, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Reads the request head and answers 101, or returns None (the connection
/// is dropped) for anything that is not a WebSocket upgrade.
async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let buf = vec![0u8; 1024];
        let (n, buf) = stream.read(buf).await;
        let n = n.ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head).ok()? {
            httparse::Status::Partial if head.len() < 16 * 1024 => continue,
            httparse::Status::Partial => return None,
            httparse::Status::Complete(_) => {
                let key = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))?
                    .value;
                let mut sha = Sha1::new();
                sha.update(key);
                sha.update(GUID.as_bytes());
                let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                let (result, _) = stream.write_all(response.into_bytes()).await;
                return result.ok().map(|_| ());
            }
        }
    }
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let compat = monoio_compat::StreamWrapper::new(stream);
    let mut ws = FragmentCollector::new(WebSocket::after_handshake(compat, Role::Server));
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        match frame.opcode {
            OpCode::Close => return,
            OpCode::Text | OpCode::Binary => {
                if ws.write_frame(frame).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(4096)
        .build()
        .expect("an io_uring runtime (monoio)");
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).expect("binding the address");
        println!("Server started, listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            monoio::spawn(serve(stream));
        }
    });
}

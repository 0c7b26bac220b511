//! What the frame-path benchmarks share: client frames, and an in-memory
//! stream that plays a client for fastwebsockets.

use std::pin::Pin;
use std::task::{Context, Poll};

use fastwebsockets::{Role, WebSocket};
use ringecho::codec;
use tokio::io::{AsyncRead, Join, ReadBuf, Sink};

/// One final masked frame (`opcode` 1 text, 2 binary) as a client sends it.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    codec::encode_masked(true, opcode, payload, [0x37, 0xfa, 0x21, 0x3d])
}

/// Serves `frame` endlessly, like a socket with a client that keeps sending it.
pub struct Repeat {
    frame: Vec<u8>,
    pos: usize,
}

impl Repeat {
    pub fn new(frame: Vec<u8>) -> Self {
        Repeat { frame, pos: 0 }
    }
}

impl AsyncRead for Repeat {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.frame.len() - self.pos);
        let pos = self.pos;
        buf.put_slice(&self.frame[pos..pos + n]);
        self.pos = (pos + n) % self.frame.len();
        Poll::Ready(Ok(()))
    }
}

/// fastwebsockets as a server whose client sends `frame` again and again,
/// with nothing done for the application (no automatic pongs or closes).
pub fn reference_server(frame: Vec<u8>) -> WebSocket<Join<Repeat, Sink>> {
    let stream = tokio::io::join(Repeat::new(frame), tokio::io::sink());
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_max_message_size(64 << 20);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws
}

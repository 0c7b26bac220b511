//! The tokio-uring driver: tokio-uring's reactor, one io_uring per core.
//!
//! The HTTP phase runs on a tokio socket; after the upgrade its descriptor is
//! handed to tokio-uring, so every read and write of the WebSocket phase is an
//! io_uring operation on buffers the session owns.

use std::io;
use std::ops::Range;
use std::rc::Rc;

use tokio_uring::buf::{BoundedBuf, IoBuf};

use super::{Io, Out};

pub struct UringStream(tokio_uring::net::TcpStream);

impl UringStream {
    /// Takes over a socket that finished its HTTP phase on tokio's reactor.
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Self> {
        let std = stream.into_std()?;
        // io_uring completes reads and writes itself; a non-blocking socket
        // would only add EAGAIN round trips.
        std.set_nonblocking(false)?;
        Ok(UringStream(tokio_uring::net::TcpStream::from_std(std)))
    }
}

impl Io for UringStream {
    type Buf = Vec<u8>;

    fn buffer(&self, initial: &[u8], capacity: usize) -> Vec<u8> {
        super::owned_buffer(initial, capacity)
    }

    async fn read(&self, buf: Vec<u8>, held: usize) -> (io::Result<usize>, Vec<u8>) {
        let (result, slice) = self.0.read(buf.slice(held..)).await;
        (result, slice.into_inner())
    }

    async fn write(&self, buf: Vec<u8>, out: &mut Vec<Out>) -> (io::Result<()>, Vec<u8>) {
        // The common case, one echo from the receive buffer: one write.
        if let [Out::Recv(range)] = out.as_slice() {
            let range = range.clone();
            out.clear();
            let (result, slice) = self.0.write_all(buf.slice(range)).await;
            return (result, slice.into_inner());
        }
        // Several frames: one vectored write whose pieces point into the
        // receive buffer (shared for the duration) and into owned frames.
        let shared = Rc::new(buf);
        let mut segments: Vec<Segment> = out
            .drain(..)
            .map(|piece| match piece {
                Out::Recv(range) => Segment {
                    memory: Memory::Shared(shared.clone()),
                    range,
                },
                Out::Owned(frame, start) => Segment {
                    range: start..frame.len(),
                    memory: Memory::Owned(frame),
                },
            })
            .filter(|s| !s.range.is_empty())
            .collect();
        let result = loop {
            if segments.is_empty() {
                break Ok(());
            }
            let (result, back) = self.0.writev(segments).await;
            segments = back;
            match result {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => advance(&mut segments, n),
                Err(e) => break Err(e),
            }
        };
        drop(segments);
        let buf = Rc::try_unwrap(shared).expect("every segment was dropped");
        (result, buf)
    }

    async fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        self.0.write_all(frame).await.0
    }

    fn shutdown(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }

    fn half_close(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

enum Memory {
    Shared(Rc<Vec<u8>>),
    Owned(Vec<u8>),
}

/// A piece of a vectored write, owned as io_uring requires.
struct Segment {
    memory: Memory,
    range: Range<usize>,
}

// SAFETY: the pointer is into a heap buffer that the segment keeps alive and
// that nobody mutates while the segment exists (the receive buffer is shared
// through an Rc, so it cannot be borrowed mutably until every segment is gone).
unsafe impl IoBuf for Segment {
    fn stable_ptr(&self) -> *const u8 {
        let base = match &self.memory {
            Memory::Shared(buf) => buf.as_ptr(),
            Memory::Owned(buf) => buf.as_ptr(),
        };
        base.wrapping_add(self.range.start)
    }

    fn bytes_init(&self) -> usize {
        self.range.len()
    }

    fn bytes_total(&self) -> usize {
        self.range.len()
    }
}

/// Drops what a partial vectored write sent.
fn advance(segments: &mut Vec<Segment>, mut n: usize) {
    let mut done = 0;
    for segment in segments.iter_mut() {
        if n < segment.range.len() {
            segment.range.start += n;
            break;
        }
        n -= segment.range.len();
        done += 1;
    }
    segments.drain(..done);
}

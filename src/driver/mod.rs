//! The I/O each backend gives the echo session.
//!
//! The session is written once against [`Io`]; a backend is a driver that
//! implements it. Buffers are owned and handed back with the result, as
//! io_uring requires: the kernel may write into a receive buffer until its
//! completion arrives, so the session never holds a borrow across a read.
//! Which memory a receive buffer is belongs to the driver: the connection's
//! own for epoll and tokio-uring, one of the core's provided buffers for the
//! native ring (so that an idle connection holds none).

pub mod epoll;
pub mod ring;
pub mod uring;

use std::cell::RefCell;
use std::io;
use std::ops::{DerefMut, Range};

/// One piece of output, sent in order with the others of the same batch.
#[derive(Debug)]
pub enum Out {
    /// A frame rewritten in place inside the receive buffer: the echo of a
    /// message that arrived whole in one buffer, sent from that memory.
    Recv(Range<usize>),
    /// A frame in a buffer of its own, sent from `.1` on: reassembled
    /// messages, pings and closes.
    Owned(Vec<u8>, usize),
}

/// What the echo session needs from a connected socket.
#[allow(async_fn_in_trait)] // used with static dispatch only, on one thread
pub trait Io {
    /// A receive buffer: the bytes the session parses, unmasks in place and
    /// echoes from.
    type Buf: DerefMut<Target = [u8]>;

    /// A receive buffer of at least `capacity` bytes holding `initial` (bytes
    /// that arrived with the upgrade request) at its front.
    fn buffer(&self, initial: &[u8], capacity: usize) -> Self::Buf;

    /// Waits for more bytes. The first `held` bytes of `buf` are an
    /// incomplete frame the session keeps; the buffer handed back holds them
    /// at its front, followed by the `n` new bytes of `Ok(n)` (0: the peer
    /// closed). Dropping the future must not lose data that the session will
    /// still read: the session only drops it when it ends the connection.
    async fn read(&self, buf: Self::Buf, held: usize) -> (io::Result<usize>, Self::Buf);

    /// Sends every piece of `out` in order, `Out::Recv` ranges from `buf`,
    /// preferably in one vectored write; `out` is left empty.
    async fn write(&self, buf: Self::Buf, out: &mut Vec<Out>) -> (io::Result<()>, Self::Buf);

    /// Sends one frame of its own, while a read may be in flight.
    async fn send(&self, frame: Vec<u8>) -> io::Result<()>;

    /// Shuts both directions down, so that the peer sees FIN at once even
    /// with a read still in flight.
    fn shutdown(&self);
}

/// At most this many bytes of sent frames are kept per worker for reuse.
const SPARE_BYTES: usize = 4 << 20;
/// Frames smaller than this (pings, closes) are not worth keeping.
const SPARE_MIN: usize = 1024;

thread_local! {
    /// Frames whose sends are done, kept for the next assembled message: a
    /// worker echoing messages larger than its receive buffer then allocates
    /// nothing per message, and does not fault in fresh pages for each (the
    /// allocator returns freed memory to the kernel at once).
    static SPARE: RefCell<(Vec<Vec<u8>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// An empty buffer for a frame of about `capacity` bytes: a spare one if
/// the worker has one.
pub fn frame_buffer(capacity: usize) -> Vec<u8> {
    let spare = SPARE.with_borrow_mut(|(frames, bytes)| {
        let frame = frames.pop()?;
        *bytes -= frame.capacity();
        Some(frame)
    });
    match spare {
        Some(mut frame) => {
            frame.clear();
            frame.reserve(capacity);
            frame
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Empties `out` after its frames were sent, keeping their buffers for
/// [`frame_buffer`].
fn recycle(out: &mut Vec<Out>) {
    SPARE.with_borrow_mut(|(frames, bytes)| {
        for piece in out.drain(..) {
            if let Out::Owned(frame, _) = piece {
                let size = frame.capacity();
                if size >= SPARE_MIN && *bytes + size <= SPARE_BYTES {
                    *bytes += size;
                    frames.push(frame);
                }
            }
        }
    });
}

/// The receive buffer of a driver whose connections own theirs: `capacity`
/// bytes (more if the upgrade request brought more), `initial` at the front.
fn owned_buffer(initial: &[u8], capacity: usize) -> Vec<u8> {
    let mut buf = vec![0u8; capacity.max(initial.len())];
    buf[..initial.len()].copy_from_slice(initial);
    buf
}

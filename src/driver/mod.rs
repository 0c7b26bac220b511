//! The I/O each backend gives the echo session.
//!
//! The session is written once against [`Io`]; a backend is a driver that
//! implements it. Buffers are owned and handed back with the result, as
//! tokio-uring requires: the kernel may write into a receive buffer until its
//! completion arrives, so the session never holds a borrow across a read.

pub mod epoll;
pub mod uring;

use std::io;
use std::ops::Range;

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
    /// Reads into `buf[range]` and returns how many bytes arrived (0: the
    /// peer closed). Dropping the future must not lose data that the session
    /// will still read: the session only drops it when it ends the connection.
    async fn read(&self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<usize>, Vec<u8>);

    /// Sends every piece of `out` in order, `Out::Recv` ranges from `buf`,
    /// preferably in one vectored write; `out` is left empty.
    async fn write(&self, buf: Vec<u8>, out: &mut Vec<Out>) -> (io::Result<()>, Vec<u8>);

    /// Sends one frame of its own, while a read may be in flight.
    async fn send(&self, frame: Vec<u8>) -> io::Result<()>;

    /// Shuts both directions down, so that the peer sees FIN at once even
    /// with a read still in flight.
    fn shutdown(&self);
}

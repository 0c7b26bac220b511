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
pub mod task;
pub mod uring;

use std::io;
use std::ops::DerefMut;

pub use crate::session::Out;

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

    /// Shuts the sending side down (FIN after what was sent), and keeps
    /// reading: see `session::Phase::Draining`.
    fn half_close(&self);
}

/// The receive buffer of a driver whose connections own theirs: `capacity`
/// bytes (more if the upgrade request brought more), `initial` at the front.
fn owned_buffer(initial: &[u8], capacity: usize) -> Vec<u8> {
    let mut buf = vec![0u8; capacity.max(initial.len())];
    buf[..initial.len()].copy_from_slice(initial);
    buf
}

//! One connection on the native ring: what it holds between completions.
//!
//! A connection is a state machine the loop calls with completions. Its
//! memory rules:
//! - a provided buffer is the connection's from the completion that named
//!   it until it is recycled: kept in `queued` while the session is busy,
//!   in `buf` while a frame is incomplete, in the write state while an echo
//!   is sent from it;
//! - a write state (iovecs, msghdr, the frames) is boxed, so that the
//!   pointers the kernel holds stay put while the connection table grows;
//! - the descriptor is closed only when `ops` says no operation names it.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::admission::Admission;
use crate::codec::Violation;
use crate::hub::HubSession;
use crate::routes::Upgrade;
use crate::session::Out;
use crate::session::{Handler, Phase, RawEcho, Session, Timers};
use uring_loop::InFlight;

/// A connection's receive buffer between completions.
pub enum RecvBuf {
    /// Nothing held: an idle connection.
    Empty,
    /// A provided buffer, parsed and echoed where the kernel put it.
    Pool(u16),
    /// A frame that spans receives, gathered into memory of its own.
    Owned(Vec<u8>),
}

/// What a send keeps alive while the kernel has it.
pub struct WriteState {
    /// The receive buffer that `Out::Recv` pieces point into.
    pub buf: RecvBuf,
    pub out: Vec<Out>,
    pub iov: Vec<libc::iovec>,
    pub msg: libc::msghdr,
    /// The first iovec not fully sent.
    pub first: usize,
    /// A zero-copy send's result, until its notification arrives.
    pub zc_result: Option<i32>,
}

impl WriteState {
    pub fn new() -> Box<WriteState> {
        Box::new(WriteState {
            buf: RecvBuf::Empty,
            out: Vec::new(),
            iov: Vec::new(),
            // SAFETY: an all-zero msghdr is a valid empty one.
            msg: unsafe { std::mem::zeroed() },
            first: 0,
            zc_result: None,
        })
    }
}

/// The HTTP phase: request heads until an upgrade.
pub struct Http {
    /// Bytes received and not yet answered.
    pub head: Vec<u8>,
    /// The handshake timeout: a request head must be complete by then.
    pub deadline: Instant,
    /// At --max-connections: every request gets 503, then the connection ends.
    pub refused: bool,
    /// End the connection once the reply is sent.
    pub close_after: bool,
    /// Become a WebSocket once the 101 is sent.
    pub upgrade: Option<Upgrade>,
    /// Being handed to the transports thread: what it had read, and its
    /// place against --max-connections. The descriptor goes with them once
    /// no operation names it.
    pub handoff: Option<(Vec<u8>, Option<Admission>)>,
}

/// Handler methods the loop needs beyond the session's.
pub trait Pushes {
    /// A frame others want sent on this connection (hub broadcasts), or why
    /// it must close.
    fn take_pushed(&self) -> Option<Result<Vec<u8>, Violation>> {
        None
    }

    /// Whether more output waited than the connection may hold.
    fn overflowed(&self) -> bool {
        false
    }
}

impl Pushes for RawEcho<'_> {}

impl Pushes for HubSession<'_> {
    fn take_pushed(&self) -> Option<Result<Vec<u8>, Violation>> {
        HubSession::take_pushed(self)
    }

    fn overflowed(&self) -> bool {
        self.has_overflowed()
    }
}

/// The session as the loop drives it, whatever its handler.
pub trait WsSession {
    fn on_bytes(&mut self, buf: &mut [u8], out: &mut Vec<Out>) -> usize;
    fn phase(&self) -> Phase;
    fn close(&mut self, code: u16, reason: &str) -> Vec<u8>;
    fn close_code(&self) -> Option<u16>;
    fn keep_alive_frame(&self) -> Vec<u8>;
    fn take_pushed(&self) -> Option<Result<Vec<u8>, Violation>>;
    fn overflowed(&self) -> bool;
}

impl<H: Handler + Pushes> WsSession for Session<H> {
    fn on_bytes(&mut self, buf: &mut [u8], out: &mut Vec<Out>) -> usize {
        Session::on_bytes(self, buf, out)
    }
    fn phase(&self) -> Phase {
        Session::phase(self)
    }
    fn close(&mut self, code: u16, reason: &str) -> Vec<u8> {
        Session::close(self, code, reason)
    }
    fn close_code(&self) -> Option<u16> {
        Session::close_code(self)
    }
    fn keep_alive_frame(&self) -> Vec<u8> {
        self.handler().keep_alive_frame()
    }
    fn take_pushed(&self) -> Option<Result<Vec<u8>, Violation>> {
        self.handler().take_pushed()
    }
    fn overflowed(&self) -> bool {
        Pushes::overflowed(self.handler())
    }
}

/// The WebSocket phase: the session and its timers.
pub struct Ws<S: ?Sized> {
    pub timers: Timers,
    /// Frames of our own (pings, closes, broadcasts) waiting for the send
    /// in flight to finish.
    pub later: Vec<Vec<u8>>,
    /// A send in flight must be done by then (--client-timeout).
    pub write_deadline: Option<Instant>,
    /// End the connection once everything queued is sent.
    pub finish: bool,
    /// Our side is shut down (`session::Phase::Draining`).
    pub half_closed: bool,
    pub session: S,
}

/// The echo, by far the most common, lives inline: no allocation and no
/// pointer to follow per message. The others are boxed so that they do not
/// make every connection as large as themselves.
#[allow(clippy::large_enum_variant)]
pub enum Stage<'w> {
    Http(Box<Http>),
    Echo(Ws<Session<RawEcho<'w>>>),
    Hub(Box<Ws<Session<HubSession<'w>>>>),
}

pub struct Conn<'w> {
    pub fd: i32,
    /// Operations naming `fd` that the kernel still has.
    pub ops: InFlight,
    /// The multishot receive is in the kernel.
    pub recv_armed: bool,
    /// Its cancellation (a pause) was asked for.
    pub recv_cancelling: bool,
    /// It ended for want of buffers; re-armed when some come back.
    pub starved: bool,
    /// The peer closed (or the receive failed): end once `queued` is handled.
    pub eof: bool,
    /// Ended: waiting for `ops` to reach zero before the close.
    pub ending: bool,
    /// Received buffers not handled yet: (buffer, bytes).
    pub queued: VecDeque<(u16, u32)>,
    pub buf: RecvBuf,
    /// Bytes of `buf` holding data.
    pub filled: usize,
    /// Bytes of `buf` the session consumed (valid while a send is in flight).
    pub consumed: usize,
    pub write: Option<Box<WriteState>>,
    /// The deadline this connection has an entry for in the loop's timers.
    pub scheduled: Option<Instant>,
    pub admission: Option<Admission>,
    pub stage: Stage<'w>,
}

impl<'w> Conn<'w> {
    /// The WebSocket phase, whatever its handler.
    pub fn ws(&mut self) -> Option<&mut Ws<dyn WsSession + 'w>> {
        match &mut self.stage {
            Stage::Http(_) => None,
            Stage::Echo(ws) => Some(ws),
            Stage::Hub(ws) => Some(&mut **ws),
        }
    }

    pub fn http(&mut self) -> Option<&mut Http> {
        match &mut self.stage {
            Stage::Http(http) => Some(http),
            _ => None,
        }
    }

    /// When the loop must call this connection back, if ever.
    pub fn deadline(&mut self) -> Option<Instant> {
        if self.ending {
            return None;
        }
        match &mut self.stage {
            Stage::Http(http) => Some(http.deadline),
            Stage::Echo(ws) => earliest(ws.timers.next(), ws.write_deadline),
            Stage::Hub(ws) => earliest(ws.timers.next(), ws.write_deadline),
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A receive buffer's bytes, given the pool it may live in.
pub struct View<'a> {
    pub buf: &'a mut RecvBuf,
    pub pool: &'a uring_loop::BufRing,
}

impl Deref for View<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.buf {
            RecvBuf::Empty => &[],
            // SAFETY: the connection holds this buffer (a completion handed
            // it over and it was not recycled), and only through this view.
            RecvBuf::Pool(bid) => unsafe { self.pool.slice(*bid) },
            RecvBuf::Owned(v) => v,
        }
    }
}

impl DerefMut for View<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut *self.buf {
            RecvBuf::Empty => &mut [],
            // SAFETY: as in deref.
            RecvBuf::Pool(bid) => unsafe { self.pool.slice(*bid) },
            RecvBuf::Owned(v) => v,
        }
    }
}

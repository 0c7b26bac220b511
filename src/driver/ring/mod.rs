//! The io-uring backend: each worker runs one [`uring_loop`] and drives its
//! connections straight from completions. A worker blocks in one place, the
//! ring's `io_uring_enter`; there is no tokio, no future and no waker on the
//! path of a message:
//!
//! ```text
//! completion ─► connection state machine ─► Session::on_bytes (sans-IO)
//!                      ▲                              │
//!                      └──── send queued on the ring ◄┘
//! ```
//!
//! - accept: one multishot accept on the worker's SO_REUSEPORT listener;
//! - receive: one multishot receive per connection into the core's provided
//!   buffers, bundled and capped, paused when the session falls behind;
//! - HTTP: request heads parsed here ([`http`]) and answered from the
//!   engine's routing table, until the upgrade;
//! - echo: frames parsed, unmasked and answered in the buffer the kernel
//!   filled, sent from that memory;
//! - timers: each connection's next deadline in the loop's heap, which bounds
//!   the wait;
//! - hub broadcasts and shutdown: a doorbell (eventfd) read through the ring.

mod conn;
mod http;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types::Fd;
use slab::Slab;
use uring_loop::{BufRing, Cqe, Doorbell, DoorbellReader, InFlight, Ring, Timers, UserData};

use self::conn::{Conn, Http, RecvBuf, Stage, View, WriteState, Ws};
use crate::engine::Worker;
use crate::handover::Handoff;
use crate::hub::{Broadcast, HubSession};
use crate::routes::{self, Endpoint, Upgrade};
use crate::session::Out;
use crate::session::{Due, Phase, RawEcho, Session, Timers as SessionTimers, CLOSE_WAIT};
use crate::stats::WorkerStats;

/// Submission queue entries; in-flight operations are not bounded by it.
const RING_ENTRIES: u32 = 1024;
/// Provided buffers per core, in bytes: the pool's size, whatever the size of
/// one buffer. Touched buffers stay resident: a fixed cost per core.
const POOL_BYTES: usize = 8 << 20;
const BUF_GROUP: u16 = 0;
/// A connection whose session does not take its data (it is stuck sending
/// to a client that does not read) stops receiving at this many buffers...
const MAX_QUEUED: usize = 16;
/// ...or at this many when the pool runs low, so that many such connections
/// together cannot take the pool from the others either.
const MAX_QUEUED_LOW: usize = 2;
/// One receive completion fills at most this many buffers.
const BUNDLE_BUFFERS: usize = 8;
/// Receives that ran out of buffers are re-armed once this many are free.
const REARM_FREE: usize = 16;
/// Write states kept for reuse.
const SPARE_WRITE_STATES: usize = 1024;

/// Operation kinds, in the low byte of user_data.
const OP_ACCEPT: u8 = 1;
const OP_DOORBELL: u8 = 2;
const OP_RECV: u8 = 3;
const OP_SEND: u8 = 4;
/// Operations whose completion nobody waits for (cancellations).
const OP_UNWATCHED: u8 = 5;

/// Timer keys beside connection keys.
const TIMER_ACCEPT_RETRY: usize = u32::MAX as usize;
const TIMER_HOUSEKEEPING: usize = u32::MAX as usize - 1;

/// Asks a zero-copy send's notification to say whether the kernel copied
/// the data after all (io_uring.h; the io-uring crate exports neither).
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// What the runtime hands a worker of this backend.
pub struct Start {
    pub listener: std::net::TcpListener,
    pub inbox: tokio::sync::mpsc::UnboundedReceiver<Broadcast>,
    pub doorbell: Arc<Doorbell>,
    pub ready: mpsc::Sender<Result<(), String>>,
}

/// Runs one worker until the engine stops and its connections are closed.
pub fn serve(worker: Rc<Worker>, start: Start) {
    let Start {
        listener,
        inbox,
        doorbell,
        ready,
    } = start;
    let mut core = match Core::new(&worker, listener, inbox, doorbell) {
        Ok(core) => core,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "worker {}: setting up its io_uring: {e}",
                worker.index
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    if let Err(e) = core.run() {
        tracing::error!(worker = worker.index, "the ring failed: {e}");
    }
    core.close();
}

/// Connection slots reserved up front: the engine's connection limit, up to
/// 65 536. Reserved address space costs no memory until a slot is used, and
/// a table that never has to grow by doubling carries no slack: an idle
/// connection costs its slot (`size_of::<Conn>`), not up to twice that.
fn table_reserve(worker: &Worker) -> usize {
    (worker.engine.admissions.max() + 64).clamp(256, 1 << 16)
}

/// One worker's loop and everything it owns.
struct Core<'w> {
    worker: &'w Worker,
    stats: &'w WorkerStats,
    ring: Ring,
    pool: BufRing,
    conns: Slab<Conn<'w>>,
    timers: Timers<usize>,
    listener: Option<OwnedFd>,
    /// The multishot accept, while the kernel has it.
    accept: InFlight,
    bell: DoorbellReader,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Broadcast>,
    /// Connections whose receive ended for want of buffers.
    starved: Vec<usize>,
    /// Timer entries being fired (kept to reuse its memory).
    due: Vec<(Instant, usize)>,
    /// Boxed: the kernel holds pointers into a write state (msghdr,
    /// iovecs) while its send is in flight, so it must never move.
    #[allow(clippy::vec_box)]
    write_states: Vec<Box<WriteState>>,
    /// The session's output for one batch of input.
    scratch: Vec<Out>,
    /// Set once the engine stops: connections get until then to close.
    stop_deadline: Option<Instant>,
    last_accept_error_log: Option<Instant>,
    /// Sends of at least this many bytes are zero-copy (0: none are).
    send_zc_min: usize,
    zc_sent: u64,
    zc_copied: u64,
}

impl<'w> Core<'w> {
    fn new(
        worker: &'w Worker,
        listener: std::net::TcpListener,
        inbox: tokio::sync::mpsc::UnboundedReceiver<Broadcast>,
        doorbell: Arc<Doorbell>,
    ) -> io::Result<Core<'w>> {
        let options = &worker.options;
        let mut ring = Ring::new(RING_ENTRIES)?;
        let size = options.receive_buffer_size;
        // clamp keeps it at most 2^15 (the kernel's limit), a power of two.
        let count = (POOL_BYTES / size).clamp(64, 1 << 15).next_power_of_two() as u16;
        let pool = BufRing::new(&ring, BUF_GROUP, count, size)?;
        if options.send_zc_min > 0 {
            let (base, len) = pool.memory();
            let whole = libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            };
            // SAFETY: the pool outlives the registration (Core::close
            // unregisters both before the pool is dropped).
            unsafe { ring.submitter().register_buffers(&[whole])? };
        }
        // The ring waits for connections itself: a blocking listener.
        listener.set_nonblocking(false)?;
        let mut bell = DoorbellReader::new(doorbell);
        bell.arm(&mut ring, UserData::new(0, OP_DOORBELL).encode())?;
        let mut core = Core {
            worker,
            stats: worker.stats(),
            ring,
            pool,
            conns: Slab::with_capacity(table_reserve(worker)),
            timers: Timers::default(),
            listener: Some(listener.into()),
            accept: InFlight::default(),
            bell,
            inbox,
            starved: Vec::new(),
            due: Vec::new(),
            write_states: Vec::new(),
            scratch: Vec::new(),
            stop_deadline: None,
            last_accept_error_log: None,
            send_zc_min: options.send_zc_min,
            zc_sent: 0,
            zc_copied: 0,
        };
        core.arm_accept();
        core.timers
            .add(Instant::now() + Duration::from_secs(1), TIMER_HOUSEKEEPING);
        Ok(core)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut batch = [Cqe::default(); 64];
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.stop_deadline {
                if self.conns.is_empty() || now >= deadline {
                    return Ok(());
                }
            }
            self.fire_timers(now);
            // The wait's own timeout, not an in-ring alarm (uring_loop::Alarm):
            // the worker's deadlines are seconds away, so arming one per wait
            // costs little (8.95 against 8.74 µs per message at 65 000 msgs/s),
            // and with the alarm two constant-rate runs of 16 KiB messages
            // stalled with data waiting, which was not explained.
            let timeout = self.timers.timeout(Instant::now());
            self.ring.wait(timeout)?;
            // One batch per enter: the sends it queued go in with the next
            // enter (which returns at once while completions wait), so a
            // client's echo never waits behind a long queue of others' work.
            let n = self.ring.reap(&mut batch);
            for cqe in &batch[..n] {
                self.complete(*cqe);
            }
            if !self.starved.is_empty() && self.pool.free() >= REARM_FREE {
                for key in std::mem::take(&mut self.starved) {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.starved = false;
                        self.pump(key);
                    }
                }
            }
        }
    }

    fn complete(&mut self, cqe: Cqe) {
        let ud = UserData::decode(cqe.user_data);
        let key = ud.key as usize;
        match ud.op {
            OP_RECV => self.on_recv(key, cqe),
            OP_SEND => self.on_send(key, cqe),
            OP_ACCEPT => self.on_accept(cqe),
            OP_DOORBELL => self.on_doorbell(),
            _ => {}
        }
    }

    // ---- accept ----------------------------------------------------------

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        if !self.accept.none() || self.stop_deadline.is_some() {
            return;
        }
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(UserData::new(0, OP_ACCEPT).encode());
        // SAFETY: an accept names no memory; the listener is closed only
        // when no accept is in flight (Core::stop).
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => self.accept.started(),
            Err(e) => {
                tracing::warn!("cannot arm accept: {e}; retrying");
                self.timers.add(
                    Instant::now() + Duration::from_millis(10),
                    TIMER_ACCEPT_RETRY,
                );
            }
        }
    }

    fn on_accept(&mut self, cqe: Cqe) {
        if !cqe.more() {
            self.accept.finished();
            if self.stop_deadline.is_some() {
                self.listener = None;
            }
        }
        if cqe.result >= 0 {
            self.on_connection(cqe.result);
            if !cqe.more() {
                self.arm_accept();
            }
            return;
        }
        if self.stop_deadline.is_some() || cqe.result == -libc::ECANCELED {
            return;
        }
        // EMFILE and friends: back off and keep accepting once descriptors
        // free up; never stop accepting.
        self.stats.accept_errors.add(1);
        let now = Instant::now();
        if self
            .last_accept_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let e = io::Error::from_raw_os_error(-cqe.result);
            tracing::warn!(worker = self.worker.index, "accept failed: {e}; retrying");
            self.last_accept_error_log = Some(now);
        }
        if !cqe.more() {
            self.timers
                .add(now + Duration::from_millis(10), TIMER_ACCEPT_RETRY);
        }
    }

    fn on_connection(&mut self, fd: i32) {
        let stats = self.stats;
        stats.accepted.add(1);
        stats.open_connections.add(1);
        let nodelay: libc::c_int = 1;
        // SAFETY: sets an option on the socket the kernel just gave us.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&nodelay as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let admission = self.worker.engine.admit();
        if admission.is_none() {
            stats.refused.add(1);
        }
        let http = Http {
            head: Vec::new(),
            deadline: Instant::now() + self.worker.options.handshake_timeout(),
            refused: admission.is_none(),
            close_after: false,
            upgrade: None,
            handoff: None,
        };
        let key = self.conns.insert(Conn {
            fd,
            ops: InFlight::default(),
            recv_armed: false,
            recv_cancelling: false,
            starved: false,
            eof: false,
            ending: false,
            queued: std::collections::VecDeque::new(),
            buf: RecvBuf::Empty,
            filled: 0,
            consumed: 0,
            write: None,
            scheduled: None,
            admission,
            stage: Stage::Http(Box::new(http)),
        });
        self.schedule(key);
        self.pump(key);
    }

    // ---- receive ---------------------------------------------------------

    fn arm_recv(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let cap = (BUNDLE_BUFFERS * self.pool.size()) as u32;
        let entry = self
            .ring
            .recv_multi(conn.fd, BUF_GROUP, cap)
            .user_data(UserData::new(key, OP_RECV).encode());
        // SAFETY: the receive writes only into provided buffers, which live
        // as long as the ring; the descriptor stays open while it is in
        // flight (ops counts it).
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => {
                conn.ops.started();
                conn.recv_armed = true;
            }
            Err(e) => {
                tracing::warn!("cannot queue a receive: {e}");
                self.end(key);
            }
        }
    }

    fn on_recv(&mut self, key: usize, cqe: Cqe) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let more = cqe.more();
        if !more {
            conn.ops.finished();
            conn.recv_armed = false;
            conn.recv_cancelling = false;
        }
        if let Some(first) = cqe.buffer() {
            let pool = &self.pool;
            pool.take(first, cqe.result.max(0) as usize, |bid, len| {
                if conn.ending {
                    pool.recycle(bid);
                } else {
                    conn.queued.push_back((bid, len as u32));
                }
            });
            let limit = if self.pool.free() < self.pool.count() as usize / 4 {
                MAX_QUEUED_LOW
            } else {
                MAX_QUEUED
            };
            if more && !conn.ending && !conn.recv_cancelling && conn.queued.len() >= limit {
                conn.recv_cancelling = true;
                self.cancel(key, OP_RECV);
            }
        } else if !more {
            match -cqe.result {
                libc::ENOBUFS => {
                    conn.starved = true;
                    self.starved.push(key);
                }
                libc::ECANCELED => {} // paused; re-armed once caught up
                _ => conn.eof = true, // 0: the peer closed; or an error
            }
        }
        self.pump(key);
        self.release(key);
    }

    fn cancel(&mut self, key: usize, op: u8) {
        let target = UserData::new(key, op).encode();
        let entry = self
            .ring
            .cancel(target, UserData::new(key, OP_UNWATCHED).encode());
        // SAFETY: a cancellation names no memory.
        if let Err(e) = unsafe { self.ring.push(&entry) } {
            tracing::warn!("cannot queue a cancellation: {e}");
        }
    }

    /// Moves a connection forward as far as it can go without waiting.
    fn pump(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.ending || conn.write.is_some() {
                return;
            }
            let mut try_answer = false;
            let fd = conn.fd;
            if let Some(ws) = conn.ws() {
                if ws.later.is_empty() && ws.session.phase() == Phase::Open {
                    // Broadcasts go out one at a time: the rest wait in the
                    // mailbox, against --max-pending-bytes.
                    match ws.session.take_pushed() {
                        Some(Ok(frame)) => ws.later.push(frame),
                        Some(Err(violation)) => {
                            self.stats.overflows.add(1);
                            let frame =
                                ws.session.close(violation.close_code(), violation.reason());
                            ws.later.push(frame);
                            ws.timers.closing(CLOSE_WAIT);
                        }
                        None => {}
                    }
                }
                if !ws.later.is_empty() {
                    let frames = std::mem::take(&mut ws.later);
                    self.scratch
                        .extend(frames.into_iter().map(|frame| Out::Owned(frame, 0)));
                    self.send(key);
                    continue;
                }
                if ws.finish || ws.session.phase() == Phase::Done {
                    self.end(key);
                    return;
                }
                if ws.session.phase() == Phase::Draining && !ws.half_closed {
                    // Our close is sent (no write is in flight here).
                    // SAFETY: plain syscall on a descriptor this connection owns.
                    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                    ws.half_closed = true;
                }
            } else if let Some(http) = conn.http() {
                try_answer = !http.head.is_empty() && http.upgrade.is_none();
            }
            if try_answer && self.answer(key) {
                continue;
            }
            let conn = &mut self.conns[key];
            if let Some((bid, len)) = conn.queued.pop_front() {
                self.feed(key, bid, len as usize);
                continue;
            }
            if conn.eof {
                self.end(key);
                return;
            }
            if !conn.recv_armed && !conn.starved {
                self.arm_recv(key);
            }
            return;
        }
    }

    /// Hands one received buffer to the connection's phase.
    fn feed(&mut self, key: usize, bid: u16, len: usize) {
        let pool = &self.pool;
        let conn = &mut self.conns[key];
        if let Some(http) = conn.http() {
            // SAFETY: the connection holds `bid` until the recycle below.
            http.head
                .extend_from_slice(&unsafe { pool.slice(bid) }[..len]);
            pool.recycle(bid);
            return;
        }
        if conn.filled == 0 {
            if let RecvBuf::Pool(old) = std::mem::replace(&mut conn.buf, RecvBuf::Pool(bid)) {
                pool.recycle(old);
            }
            conn.filled = len;
        } else {
            // A frame continues in this buffer: gather both into memory of
            // the connection's own.
            let held = conn.filled;
            let mut owned = match std::mem::replace(&mut conn.buf, RecvBuf::Empty) {
                RecvBuf::Owned(mut v) => {
                    v.truncate(held);
                    v
                }
                RecvBuf::Pool(old) => {
                    let mut v = Vec::with_capacity(pool.size().max(held + len));
                    // SAFETY: the connection holds `old`.
                    v.extend_from_slice(&unsafe { pool.slice(old) }[..held]);
                    pool.recycle(old);
                    v
                }
                RecvBuf::Empty => Vec::new(),
            };
            // SAFETY: the connection holds `bid` until the recycle below.
            owned.extend_from_slice(&unsafe { pool.slice(bid) }[..len]);
            pool.recycle(bid);
            conn.buf = RecvBuf::Owned(owned);
            conn.filled = held + len;
        }
        if let Some(ws) = conn.ws() {
            ws.timers.received();
        }
        self.on_bytes(key);
    }

    /// Runs the session over the connection's buffer and sends its answer.
    fn on_bytes(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let filled = conn.filled;
        let mut view = View {
            buf: &mut conn.buf,
            pool: &self.pool,
        };
        let ws: &mut Ws<dyn conn::WsSession + 'w> = match &mut conn.stage {
            Stage::Echo(ws) => ws,
            Stage::Hub(ws) => &mut **ws,
            Stage::Http(_) => return,
        };
        conn.consumed = ws.session.on_bytes(&mut view[..filled], &mut self.scratch);
        if matches!(ws.session.phase(), Phase::Closing | Phase::Draining)
            && ws.timers.close_deadline().is_none()
        {
            ws.timers.closing(CLOSE_WAIT);
        }
        if self.scratch.is_empty() {
            self.shift(key);
        } else {
            self.send(key);
        }
        self.schedule(key);
    }

    /// Drops the consumed bytes from the front of the receive buffer.
    fn shift(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let (consumed, filled) = (conn.consumed, conn.filled);
        conn.consumed = 0;
        if consumed == 0 {
            return;
        }
        if consumed >= filled {
            conn.filled = 0;
            if let RecvBuf::Pool(bid) = std::mem::replace(&mut conn.buf, RecvBuf::Empty) {
                self.pool.recycle(bid);
            }
            return;
        }
        let mut view = View {
            buf: &mut conn.buf,
            pool: &self.pool,
        };
        view.copy_within(consumed..filled, 0);
        conn.filled = filled - consumed;
    }

    // ---- send ------------------------------------------------------------

    /// Sends everything in `scratch`, in order, from the memory it lies in.
    fn send(&mut self, key: usize) {
        let mut state = self.write_states.pop().unwrap_or_else(WriteState::new);
        let conn = &mut self.conns[key];
        std::mem::swap(&mut state.out, &mut self.scratch);
        state.buf = std::mem::replace(&mut conn.buf, RecvBuf::Empty);
        state.iov.clear();
        state.first = 0;
        state.zc_result = None;
        {
            let WriteState { buf, out, iov, .. } = &mut *state;
            let view = View {
                buf,
                pool: &self.pool,
            };
            for piece in out.iter() {
                let slice: &[u8] = match piece {
                    Out::Recv(range) => &view[range.clone()],
                    Out::Owned(frame, start) => &frame[*start..],
                };
                iov.push(libc::iovec {
                    iov_base: slice.as_ptr() as *mut libc::c_void,
                    iov_len: slice.len(),
                });
            }
        }
        if let (Some(limit), Some(ws)) = (self.worker.options.client_timeout(), conn.ws()) {
            ws.write_deadline = Some(Instant::now() + limit);
        }
        conn.write = Some(state);
        self.submit_send(key);
    }

    /// Queues the send of what is left of the connection's write state.
    fn submit_send(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let state = conn.write.as_mut().expect("a write in flight");
        while state.first < state.iov.len() && state.iov[state.first].iov_len == 0 {
            state.first += 1;
        }
        let left = &state.iov[state.first..];
        let fd = Fd(conn.fd);
        let zero_copy = self.send_zc_min > 0
            && left.iter().map(|v| v.iov_len).sum::<usize>() >= self.send_zc_min;
        let entry = if left.len() == 1 {
            let (base, len) = (left[0].iov_base.cast::<u8>(), left[0].iov_len as u32);
            if zero_copy {
                let registered = self.pool.holds(base, len as usize).then_some(0);
                opcode::SendZc::new(fd, base, len)
                    .buf_index(registered)
                    .zc_flags(IORING_SEND_ZC_REPORT_USAGE)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            } else {
                opcode::Send::new(fd, base, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
        } else {
            state.msg.msg_iov = state.iov[state.first..].as_mut_ptr();
            state.msg.msg_iovlen = state.iov.len() - state.first;
            if zero_copy {
                opcode::SendMsgZc::new(fd, &state.msg)
                    .ioprio(IORING_SEND_ZC_REPORT_USAGE)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            } else {
                opcode::SendMsg::new(fd, &state.msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
        };
        let entry = entry.user_data(UserData::new(key, OP_SEND).encode());
        // SAFETY: the iovecs, the msghdr and the memory they point to live
        // in the boxed write state (or the pool), which the connection keeps
        // until this send's last completion; the descriptor stays open until
        // then (ops counts it).
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => conn.ops.started(),
            Err(e) => {
                tracing::warn!("cannot queue a send: {e}");
                let state = conn.write.take().expect("a write state");
                self.give_back(state);
                self.end(key);
            }
        }
    }

    fn on_send(&mut self, key: usize, cqe: Cqe) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let state = conn
            .write
            .as_mut()
            .expect("a send completes into its write state");
        // A zero-copy send completes twice: its result (with MORE), then a
        // notification once the kernel let go of the memory.
        let result = if cqe.notif() {
            self.zc_sent += 1;
            if cqe.result as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
                self.zc_copied += 1;
            }
            state.zc_result.take().unwrap_or(0)
        } else if cqe.more() {
            state.zc_result = Some(cqe.result);
            return;
        } else {
            cqe.result
        };
        conn.ops.finished();
        if conn.ending || result <= 0 {
            let state = conn.write.take().expect("a write state");
            self.give_back(state);
            self.end(key);
            self.release(key);
            return;
        }
        let mut sent = result as usize;
        for iov in &mut state.iov[state.first..] {
            let n = sent.min(iov.iov_len);
            iov.iov_base = iov.iov_base.wrapping_add(n);
            iov.iov_len -= n;
            sent -= n;
            if sent == 0 {
                break;
            }
        }
        if state.iov.iter().any(|v| v.iov_len > 0) {
            self.submit_send(key);
            return;
        }
        let mut state = conn.write.take().expect("a write state");
        conn.buf = std::mem::replace(&mut state.buf, RecvBuf::Empty);
        if let Some(ws) = conn.ws() {
            ws.write_deadline = None;
        }
        let reply = conn.http().map(|http| (http.upgrade, http.close_after));
        self.give_back(state);
        match reply {
            Some((upgrade, close)) => self.after_reply(key, upgrade, close),
            None => self.shift(key),
        }
        self.pump(key);
    }

    /// Keeps a write state for the next send; what it still holds goes back.
    fn give_back(&mut self, mut state: Box<WriteState>) {
        if let RecvBuf::Pool(bid) = std::mem::replace(&mut state.buf, RecvBuf::Empty) {
            self.pool.recycle(bid);
        }
        state.buf = RecvBuf::Empty;
        crate::session::out::recycle(&mut state.out);
        if self.write_states.len() < SPARE_WRITE_STATES {
            self.write_states.push(state);
        }
    }

    // ---- HTTP ------------------------------------------------------------

    /// Answers the request at the front of the connection's head buffer, if
    /// it is complete; returns whether a reply went out.
    fn answer(&mut self, key: usize) -> bool {
        let worker = self.worker;
        let conn = &mut self.conns[key];
        let Some(http) = conn.http() else {
            return false;
        };
        let options = &worker.options;
        let body_limit = (&options.hub_path[..], options.max_message_size);
        let (reply, head_only, close, upgrade) = match http::parse(&http.head, body_limit) {
            Ok(http::Head::Partial) => return false,
            Ok(http::Head::Complete {
                request,
                len,
                body,
                close,
            }) => {
                if http.head.len() < len + body {
                    return false;
                }
                let head_only = request.method == ::http::Method::HEAD;
                if http.refused {
                    http.head.drain(..len + body);
                    (routes::refusal(), head_only, true, None)
                } else {
                    match routes::respond(worker, &request) {
                        routes::Routed::Reply(reply, upgrade) => {
                            http.head.drain(..len + body);
                            (reply, head_only, close, upgrade)
                        }
                        routes::Routed::Transport => {
                            self.hand_off(key);
                            return true;
                        }
                    }
                }
            }
            Err((status, why)) => {
                http.head.clear();
                (routes::text(status, &format!("{why}\n")), false, true, None)
            }
        };
        http.close_after = close || http.refused;
        http.upgrade = upgrade;
        let bytes = http::serialize(&reply, head_only, http.close_after && upgrade.is_none());
        self.scratch.push(Out::Owned(bytes, 0));
        self.send(key);
        true
    }

    /// A reply was sent: become a WebSocket, end, or wait for the next
    /// request.
    fn after_reply(&mut self, key: usize, upgrade: Option<Upgrade>, close: bool) {
        let worker = self.worker;
        let options = &worker.options;
        let conn = &mut self.conns[key];
        let Stage::Http(http) = &mut conn.stage else {
            return;
        };
        if let Some(Upgrade { endpoint, deflate }) = upgrade {
            let initial = std::mem::take(&mut http.head);
            let stats = self.stats;
            stats.open_websockets.add(1);
            stats.upgraded.add(1);
            let capacity = options.receive_buffer_size;
            conn.stage = match endpoint {
                Endpoint::Echo => {
                    let handler = RawEcho {
                        stats,
                        keep_alive: options.keep_alive(),
                    };
                    Stage::Echo(ws(handler, options, deflate))
                }
                Endpoint::Hub | Endpoint::Broadcast => {
                    let raw = endpoint == Endpoint::Broadcast;
                    let handler = HubSession::configured(worker.hub.clone(), stats, options, raw);
                    Stage::Hub(Box::new(ws(handler, options, deflate)))
                }
            };
            // What the client sent past the upgrade request.
            conn.filled = initial.len();
            if !initial.is_empty() {
                let mut owned = Vec::with_capacity(capacity.max(initial.len()));
                owned.extend_from_slice(&initial);
                conn.buf = RecvBuf::Owned(owned);
                self.on_bytes(key);
            }
            self.schedule(key);
            return;
        }
        if close {
            self.end(key);
            return;
        }
        // Keep-alive: the next request head has the handshake timeout too.
        http.deadline = Instant::now() + options.handshake_timeout();
        self.schedule(key);
    }

    // ---- timers ------------------------------------------------------------

    /// Makes sure the loop calls the connection back by its deadline. An
    /// entry is added only when the deadline moved earlier than the one the
    /// connection already has, so later ones cost nothing here.
    fn schedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(deadline) = conn.deadline() else {
            return;
        };
        if conn.scheduled.is_none_or(|at| deadline < at) {
            conn.scheduled = Some(deadline);
            self.timers.add(deadline, key);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        // Taken out first: a deadline set again at or before `now` fires at
        // the next turn of the loop, after the I/O that is waiting, rather
        // than in a loop of its own here.
        let mut due = std::mem::take(&mut self.due);
        while let Some(entry) = self.timers.pop_due(now) {
            due.push(entry);
        }
        for (at, key) in due.drain(..) {
            match key {
                TIMER_ACCEPT_RETRY => self.arm_accept(),
                TIMER_HOUSEKEEPING => {
                    self.give_back_memory();
                    self.timers
                        .add(now + Duration::from_secs(1), TIMER_HOUSEKEEPING);
                }
                key => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.scheduled != Some(at) {
                        continue; // superseded by an earlier entry
                    }
                    conn.scheduled = None;
                    self.on_timer(key, now);
                    self.schedule(key);
                }
            }
        }
        self.due = due;
    }

    /// Once a second: tables sized for a peak of connections shrink once
    /// most of them are gone, and the allocator returns what was freed. The
    /// connection table alone is about 3 MiB per worker after 5 000
    /// connections, and kept its peak until the worker stopped.
    fn give_back_memory(&mut self) {
        let open = self.conns.len();
        if open < self.conns.capacity() / 4 && self.conns.capacity() > 256 {
            // The table's pages were touched up to its peak: a new
            // reservation holds what is open and leaves the rest untouched.
            self.conns.shrink_to_fit();
            self.conns.reserve_exact(
                table_reserve(self.worker) - self.conns.len().min(table_reserve(self.worker)),
            );
        }
        self.timers.shrink();
        if self.starved.capacity() > 2 * self.starved.len().max(64) {
            self.starved.shrink_to_fit();
        }
        crate::memory::collect_freed_memory();
    }

    fn on_timer(&mut self, key: usize, now: Instant) {
        let worker = self.worker;
        let options = &worker.options;
        let stats = self.stats;
        let conn = &mut self.conns[key];
        if conn.ending {
            return;
        }
        if let Some(http) = conn.http() {
            if http.deadline <= now {
                self.end(key); // hyper's header read timeout does the same
            }
            return;
        }
        let writing = conn.write.is_some();
        let ws = conn.ws().expect("a WebSocket");
        if writing && ws.write_deadline.is_some_and(|d| d <= now) {
            // A client that stops reading would hold this send forever.
            stats.client_timeouts.add(1);
            self.end(key);
            return;
        }
        match ws.timers.due(now) {
            Some(Due::Ping) => {
                stats.keep_alive_pings.add(1);
                let frame = ws.session.keep_alive_frame();
                ws.later.push(frame);
            }
            Some(Due::ClientTimeout) => {
                tracing::info!(
                    "client disconnected: nothing received for {}s",
                    options.client_timeout
                );
                stats.client_timeouts.add(1);
                let frame = ws.session.close(1001, "client timeout");
                ws.later.push(frame);
                ws.finish = true;
                // Only the send of the close is left to wait for.
                ws.timers.closing(CLOSE_WAIT);
            }
            Some(Due::CloseWaitOver) => {
                self.end(key);
                return;
            }
            None => {}
        }
        self.pump(key);
    }

    // ---- cross-core: broadcasts and shutdown ------------------------------

    fn on_doorbell(&mut self) {
        if let Err(e) = self
            .bell
            .arm(&mut self.ring, UserData::new(0, OP_DOORBELL).encode())
        {
            tracing::error!("cannot re-arm the doorbell: {e}");
        }
        let mut delivered = false;
        while let Ok(frame) = self.inbox.try_recv() {
            self.worker.hub.deliver_one(&frame);
            delivered = true;
        }
        if delivered {
            self.push_broadcasts();
        }
        if self.worker.engine.stopping.load(Ordering::Acquire) && self.stop_deadline.is_none() {
            self.stop();
        }
    }

    /// Broadcasts arrived in the hub connections' mailboxes: each takes the
    /// next one when its send in flight is done ([`Core::pump`]). One whose
    /// mailbox overflowed while a send to it is stuck is given up.
    fn push_broadcasts(&mut self) {
        let stats = self.stats;
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Hub(_)) && !c.ending)
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let conn = &mut self.conns[key];
            let writing = conn.write.is_some();
            let ws = conn.ws().expect("a hub connection");
            if writing && ws.session.phase() == Phase::Open && ws.session.overflowed() {
                // Stuck behind a client that does not read while more piles
                // up: give up on it. No close frame can follow a half-sent
                // one, so 1008 is only recorded.
                stats.overflows.add(1);
                let _ = ws.session.close(1008, "too much output waiting");
                self.end(key);
                continue;
            }
            self.pump(key);
        }
    }

    /// The engine stops: no more connections; WebSockets get a 1001 close
    /// and until the shutdown timeout to answer it.
    fn stop(&mut self) {
        let worker = self.worker;
        let options = &worker.options;
        self.stop_deadline = Some(Instant::now() + options.shutdown_timeout());
        if !self.accept.none() {
            let entry = self.ring.cancel(
                UserData::new(0, OP_ACCEPT).encode(),
                UserData::new(0, OP_UNWATCHED).encode(),
            );
            // SAFETY: a cancellation names no memory.
            let _ = unsafe { self.ring.push(&entry) };
        } else {
            self.listener = None;
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if conn.ending {
                continue;
            }
            let Some(ws) = conn.ws() else {
                self.end(key); // still in its HTTP phase: simply closed
                continue;
            };
            if ws.session.phase() == Phase::Open {
                let frame = ws.session.close(1001, "server shutting down");
                ws.later.push(frame);
                ws.timers.closing(options.shutdown_timeout());
            }
            self.schedule(key);
            self.pump(key);
        }
    }

    // ---- the end of a connection ------------------------------------------

    /// Ends a connection: FIN to the peer at once, its operations cancelled,
    /// its counts and buffers given back. The descriptor is closed once the
    /// last operation naming it has completed ([`Core::release`]).
    fn end(&mut self, key: usize) {
        let stats = self.stats;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.ending {
            return;
        }
        conn.ending = true;
        // SAFETY: plain syscall on a descriptor this connection owns.
        unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
        let (recv, send) = (conn.recv_armed, conn.write.is_some());
        for (bid, _) in conn.queued.drain(..) {
            self.pool.recycle(bid);
        }
        if let RecvBuf::Pool(bid) = std::mem::replace(&mut conn.buf, RecvBuf::Empty) {
            self.pool.recycle(bid);
        }
        if let Some(ws) = conn.ws() {
            stats.count_close(ws.session.close_code().unwrap_or(1006));
            stats.open_websockets.sub(1);
        }
        stats.open_connections.sub(1);
        conn.admission = None;
        // A hub connection leaves its worker's broadcast list now.
        conn.stage = Stage::Http(Box::new(Http {
            head: Vec::new(),
            deadline: Instant::now(),
            refused: false,
            close_after: true,
            upgrade: None,
            handoff: None,
        }));
        if recv {
            self.cancel(key, OP_RECV);
        }
        if send {
            self.cancel(key, OP_SEND);
        }
        // With nothing in flight (a paused or starved receive, no send) no
        // completion will come to release it: release it now.
        self.release(key);
    }

    /// Gives a connection whose request belongs to the hub's fallback
    /// transports to the transports thread, which answers it and serves the
    /// connection from then on. Its client sends nothing more until it has
    /// that answer, so what this loop has read (the request, and anything
    /// queued after it) is all there is; the receive is cancelled and the
    /// descriptor moves once no operation names it ([`Core::release`]).
    fn hand_off(&mut self, key: usize) {
        let pool = &self.pool;
        let conn = &mut self.conns[key];
        let admission = conn.admission.take();
        let Stage::Http(http) = &mut conn.stage else {
            return;
        };
        let mut initial = std::mem::take(&mut http.head);
        for (bid, len) in conn.queued.drain(..) {
            // SAFETY: the connection holds `bid` until the recycle below.
            initial.extend_from_slice(&unsafe { pool.slice(bid) }[..len as usize]);
            pool.recycle(bid);
        }
        http.handoff = Some((initial, admission));
        conn.ending = true;
        self.stats.open_connections.sub(1);
        if conn.recv_armed {
            self.cancel(key, OP_RECV);
        }
        self.release(key);
    }

    /// Closes an ended connection's descriptor (or hands it over) and frees
    /// its slot once no operation names it.
    fn release(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if !conn.ending || !conn.ops.none() {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let Some((initial, admission)) = conn.http().and_then(|http| http.handoff.take()) {
            // SAFETY: the connection owns the descriptor and no operation
            // names it (ops is zero); the stream takes it over and nothing
            // here uses it again.
            let stream = unsafe { std::net::TcpStream::from_raw_fd(conn.fd) };
            let handoff = Handoff {
                stream,
                initial,
                admission,
            };
            // A transports thread that has stopped drops it, which closes it.
            self.worker.engine.transports.hand_off(handoff);
            return;
        }
        // SAFETY: no operation names the descriptor any more (ops is zero),
        // so its number cannot be reused under one.
        unsafe { libc::close(conn.fd) };
    }

    /// After the loop: every connection closed, the pool unregistered.
    fn close(mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.end(key);
        }
        // Give the cancellations a moment to complete, so descriptors close.
        let mut batch = [Cqe::default(); 128];
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.conns.is_empty() && Instant::now() < deadline {
            if self.ring.wait(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            let n = self.ring.reap(&mut batch);
            for cqe in &batch[..n] {
                match UserData::decode(cqe.user_data).op {
                    OP_RECV | OP_SEND => self.complete(*cqe),
                    _ => {}
                }
            }
        }
        if self.zc_sent > 0 {
            tracing::info!(
                "zero-copy sends: {}, of which the kernel copied {}",
                self.zc_sent,
                self.zc_copied
            );
        }
        if self.send_zc_min > 0 {
            let _ = self.ring.submitter().unregister_buffers();
        }
        self.pool.unregister(&self.ring);
        for (_, conn) in self.conns.iter() {
            // SAFETY: the loop is over; nothing will use these descriptors.
            unsafe { libc::close(conn.fd) };
        }
        // The listener, if still open, closes with its OwnedFd.
        self.listener = None;
    }
}

fn ws<H: crate::session::Handler>(
    handler: H,
    options: &crate::options::Options,
    deflate: Option<crate::deflate::Agreed>,
) -> Ws<Session<H>> {
    let keep_alive = handler.keep_alive_interval();
    let mut session = Session::new(
        handler,
        options.receive_buffer_size,
        options.max_message_size,
    );
    if let Some(agreed) = deflate {
        session.set_deflate(agreed);
    }
    Ws {
        timers: SessionTimers::new(options, keep_alive),
        later: Vec::new(),
        write_deadline: None,
        finish: false,
        half_closed: false,
        session,
    }
}

#[cfg(test)]
mod tests {
    use super::conn::Conn;

    /// An idle echo connection costs its slot in the worker's table and
    /// nothing else (no receive buffer, no write state): keep the slot small.
    #[test]
    fn a_connection_slot_stays_small() {
        let size = size_of::<Conn<'static>>();
        eprintln!("connection slot: {size} bytes");
        assert!(size <= 512, "{size} bytes");
    }
}

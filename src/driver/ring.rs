//! The io-uring driver: a ring of our own per core, driven directly through
//! the io-uring crate, with what tokio-uring 0.5 does not expose: multishot
//! accept, multishot receive into a per-core provided buffer ring (an idle
//! connection holds no receive buffer), SINGLE_ISSUER + DEFER_TASKRUN, and
//! one submission for every operation the core's connections queued.
//!
//! The worker still runs tokio's current-thread runtime: hyper's HTTP phase,
//! the timers and the hub's channels live there. One task, [`Ring::drive`],
//! submits what the sessions queued, runs the kernel's deferred completions
//! and wakes the sessions. With nothing to do it sleeps on an eventfd that the
//! kernel signals when completions are waiting to be run.
//!
//! An operation's memory belongs to the ring until its completion arrives: a
//! future dropped early (a timeout, a connection ending) hands what it owned to
//! the ring, which frees it on completion. No timer ever drops an operation
//! the kernel is still using.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};
use slab::Slab;
use tokio::io::unix::AsyncFd;

use super::{Io, Out};

/// Asks a zero-copy send's notification to say whether the kernel copied
/// the data after all, which it then does with this bit (io_uring.h; the
/// io-uring crate exports neither for x86-64).
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
/// A completion's flags naming its provided buffer (io_uring.h).
const IORING_CQE_F_BUFFER: u32 = 1;
const IORING_CQE_BUFFER_SHIFT: u32 = 16;
/// The one provided-buffer group of each ring.
const BUF_GROUP: u16 = 0;
/// user_data of operations whose completion nobody awaits (cancellations).
const UNWATCHED: u64 = u64::MAX;
const ENTER_GETEVENTS: u32 = 1;
/// Provided buffers per core, in bytes: the pool's size, whatever the size of
/// one buffer. Touched buffers stay resident, so this is a fixed cost per core.
const POOL_BYTES: usize = 8 << 20;
/// A connection whose session does not take its received data (it is stuck
/// writing to a client that does not read) stops receiving after this many
/// buffers, so that one client cannot drain the core's pool. A bundled
/// receive of one 16 KiB message alone takes five 4 KiB buffers: pausing at
/// four cancelled and re-armed the receive for nearly every such message.
const MAX_QUEUED: usize = 16;

/// One worker's ring, its operations in flight and its provided buffers.
pub struct Ring {
    uring: RefCell<IoUring>,
    ops: RefCell<Slab<Op>>,
    buffers: BufRing,
    /// Submissions queued since the last enter.
    queued: Cell<u32>,
    /// The driving task, while it sleeps.
    driver: Cell<Option<Waker>>,
    eventfd: OwnedFd,
    /// Write states between writes: shared by the core's connections, so
    /// that echoing allocates nothing and an idle connection holds none.
    /// Boxed: the kernel holds pointers into them (msghdr, iovecs) while a
    /// write is in flight, so they must not move when this list grows.
    #[allow(clippy::vec_box)]
    write_states: RefCell<Vec<Box<WriteState>>>,
    /// Multishot receives take several buffers per completion when a
    /// message is larger than one (kernel 6.10 and later).
    bundles: bool,
    /// Sends of at least this many bytes are zero-copy (0: none are).
    send_zc_min: usize,
    /// Zero-copy sends made, and those the kernel copied after all.
    zc_sent: Cell<u64>,
    zc_copied: Cell<u64>,
}

enum Op {
    /// A single-shot operation: its result, once it arrives.
    Once {
        waker: Option<Waker>,
        result: Option<i32>,
        /// A zero-copy send's result, held until its notification says the
        /// kernel is done with the memory.
        unnotified: Option<i32>,
        /// What the operation's memory lives in, once its future is gone.
        orphan: Option<Box<dyn Any>>,
    },
    /// A multishot operation (accept, receive): completions queue until taken.
    Multi {
        waker: Option<Waker>,
        queue: VecDeque<(i32, u32)>,
        /// Paused (cancelled, re-armed when taken) at this many completions
        /// waiting: a receive whose session is busy holds no more buffers.
        pause_at: Option<usize>,
        /// In the kernel: its last completion has not arrived yet.
        armed: bool,
        /// Cancelled with nobody left to take its completions.
        orphaned: bool,
    },
}

impl Ring {
    /// A ring whose provided buffers are `buffer_size` bytes each.
    /// With `send_zc_min` above 0, sends of that many bytes or more are
    /// zero-copy, and the buffer pool is registered for them.
    pub fn new(entries: u32, buffer_size: usize, send_zc_min: usize) -> io::Result<Rc<Ring>> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 8)
            .build(entries)?;
        // SAFETY: plain syscall; the descriptor is owned right away.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(eventfd) };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let count = (POOL_BYTES / buffer_size)
            .clamp(64, 1 << 15)
            .next_power_of_two();
        // clamp keeps it at most 2^15 (the kernel's limit), a power of two already.
        let buffers = BufRing::new(&uring, count as u16, buffer_size)?;
        let bundles = uring.params().is_feature_recvsend_bundle();
        if send_zc_min > 0 {
            let pool = libc::iovec {
                iov_base: buffers.memory.cast(),
                iov_len: count * buffer_size,
            };
            // SAFETY: the pool lives as long as the ring (Ring::drop
            // unregisters it first); registered buffer 0 is the whole pool.
            unsafe { uring.submitter().register_buffers(&[pool])? };
        }
        Ok(Rc::new(Ring {
            uring: RefCell::new(uring),
            ops: RefCell::new(Slab::with_capacity(1024)),
            buffers,
            queued: Cell::new(0),
            driver: Cell::new(None),
            eventfd,
            write_states: RefCell::new(Vec::new()),
            bundles,
            send_zc_min,
            zc_sent: Cell::new(0),
            zc_copied: Cell::new(0),
        }))
    }

    /// Submits, runs completions and wakes their tasks, for as long as the
    /// worker lives. Spawned once per worker.
    pub async fn drive(self: Rc<Self>) {
        // SAFETY: the eventfd lives in the ring, which outlives this task's
        // registration (the task holds the ring).
        let eventfd = match unsafe {
            AsyncFd::register_with_interest(self.eventfd.as_raw_fd(), tokio::io::Interest::READABLE)
        } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!("cannot watch the ring's eventfd: {e}");
                return;
            }
        };
        loop {
            let reaped = self.enter();
            if reaped > 0 || self.queued.get() > 0 {
                // Let the tasks just woken run and queue their next
                // operations: they go in with the next enter, together.
                tokio::task::yield_now().await;
                continue;
            }
            // The kernel runs deferred completions in batches; what one enter
            // left behind does not signal the eventfd again, but shows in a
            // poll of the ring itself.
            if self.work_pending() {
                continue;
            }
            poll_fn(|cx| {
                if self.queued.get() > 0 {
                    return Poll::Ready(());
                }
                self.driver.set(Some(cx.waker().clone()));
                match eventfd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut ready)) => {
                        let mut count = 0u64;
                        // SAFETY: reads 8 bytes into a local u64.
                        unsafe {
                            libc::read(self.eventfd.as_raw_fd(), (&mut count as *mut u64).cast(), 8)
                        };
                        ready.clear_ready();
                        Poll::Ready(())
                    }
                    Poll::Ready(Err(_)) => Poll::Ready(()),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            self.driver.set(None);
        }
    }

    /// One io_uring_enter: submits what was queued and runs the deferred
    /// completions; then hands every completion to its operation.
    fn enter(&self) -> usize {
        let to_submit = self.queued.replace(0);
        let uring = self.uring.borrow_mut();
        // SAFETY: no argument is passed; GETEVENTS with min_complete 0 runs
        // the deferred task work without waiting.
        let entered = unsafe {
            uring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
        };
        if let Err(e) = entered {
            // EBUSY/EINTR: the completions below make room; the rest is
            // submitted with the next enter.
            if !matches!(
                e.raw_os_error(),
                Some(libc::EBUSY | libc::EINTR | libc::EAGAIN)
            ) {
                tracing::error!("io_uring_enter: {e}");
            }
            self.queued.set(self.queued.get() + to_submit);
        }
        drop(uring);
        let mut reaped = 0;
        loop {
            // Taken a few at a time, so that dropping an orphan (which may
            // recycle buffers) never happens while the ring is borrowed.
            let mut batch = [(0u64, 0i32, 0u32); 64];
            let mut n = 0;
            {
                let mut uring = self.uring.borrow_mut();
                for cqe in uring.completion().take(batch.len()) {
                    batch[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                    n += 1;
                }
            }
            if n == 0 {
                return reaped;
            }
            reaped += n;
            for &(key, result, flags) in &batch[..n] {
                self.complete(key, result, flags);
            }
        }
    }

    fn complete(&self, key: u64, result: i32, flags: u32) {
        if key == UNWATCHED {
            return;
        }
        let key = key as usize;
        let mut ops = self.ops.borrow_mut();
        let Some(op) = ops.get_mut(key) else {
            return;
        };
        match op {
            Op::Once {
                waker,
                result: slot,
                unnotified,
                orphan,
            } => {
                // A zero-copy send completes twice: its result (with MORE),
                // then a notification once the kernel let go of the memory.
                let result = if cqueue::more(flags) {
                    *unnotified = Some(result);
                    return;
                } else if cqueue::notif(flags) {
                    self.zc_sent.set(self.zc_sent.get() + 1);
                    if result as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
                        self.zc_copied.set(self.zc_copied.get() + 1);
                    }
                    unnotified.take().unwrap_or(result)
                } else {
                    result
                };
                if orphan.is_some() {
                    let orphan = ops.remove(key);
                    drop(ops);
                    drop(orphan);
                    return;
                }
                *slot = Some(result);
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            }
            Op::Multi {
                waker,
                queue,
                pause_at,
                armed,
                orphaned,
            } => {
                let more = cqueue::more(flags);
                // A bundled receive fills several buffers in one completion:
                // each is queued as a completion of its own.
                let size = self.buffers.size;
                let bids = cqueue::buffer_select(flags)
                    .map(|first| (first, (result.max(1) as usize).div_ceil(size)));
                if *orphaned {
                    if let Some((first, n)) = bids {
                        for bid in self.buffers.bundle(first, n) {
                            self.buffers.recycle(bid);
                        }
                    }
                    if !more {
                        ops.remove(key);
                    }
                    return;
                }
                let before = queue.len();
                match bids {
                    Some((first, n)) if n > 1 => {
                        let mut left = result as usize;
                        for bid in self.buffers.bundle(first, n) {
                            let len = left.min(size);
                            left -= len;
                            let flags =
                                IORING_CQE_F_BUFFER | (u32::from(bid) << IORING_CQE_BUFFER_SHIFT);
                            queue.push_back((len as i32, flags));
                        }
                    }
                    _ => queue.push_back((result, flags)),
                }
                if !more {
                    *armed = false;
                } else if pause_at.is_some_and(|at| before < at && queue.len() >= at) {
                    self.push(
                        opcode::AsyncCancel::new(key as u64)
                            .build()
                            .user_data(UNWATCHED),
                    );
                }
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Whether the kernel holds completions or deferred work not yet run.
    fn work_pending(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.uring.borrow().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one descriptor without waiting.
        unsafe { libc::poll(&mut fd, 1, 0) > 0 }
    }

    /// Queues a submission; it goes in with the driver's next enter.
    fn push(&self, entry: squeue::Entry) {
        let mut uring = self.uring.borrow_mut();
        // SAFETY: every entry points into memory its operation keeps alive
        // until completion (the op's orphan, a provided buffer, a stream's fd).
        while unsafe { uring.submission().push(&entry) }.is_err() {
            // A full queue: submit it now (no waiting, no completions run).
            match uring.submit() {
                Ok(_) => self.queued.set(0),
                Err(e) => {
                    tracing::error!("io_uring submit: {e}");
                    break;
                }
            }
        }
        self.queued.set(self.queued.get() + 1);
        if let Some(waker) = self.driver.take() {
            waker.wake();
        }
    }

    /// Starts a single-shot operation whose memory lives in `keep`.
    fn start<T: Unpin + 'static>(self: &Rc<Self>, entry: squeue::Entry, keep: T) -> Completion<T> {
        let key = self.ops.borrow_mut().insert(Op::Once {
            waker: None,
            result: None,
            unnotified: None,
            orphan: None,
        });
        self.push(entry.user_data(key as u64));
        Completion {
            ring: self.clone(),
            key,
            keep: Some(keep),
        }
    }

    fn write_state(&self) -> Box<WriteState> {
        self.write_states.borrow_mut().pop().unwrap_or_else(|| {
            Box::new(WriteState {
                buf: RecvBuf::Empty,
                out: Vec::new(),
                iov: Vec::new(),
                // SAFETY: an all-zero msghdr is a valid empty one.
                msg: unsafe { std::mem::zeroed() },
            })
        })
    }

    /// Keeps a write state for the next write, up to a few per connection
    /// ever busy at once.
    fn give_back(&self, state: Box<WriteState>) {
        let mut states = self.write_states.borrow_mut();
        if states.len() < 1024 {
            states.push(state);
        }
    }

    fn multi(&self, pause_at: Option<usize>) -> usize {
        self.ops.borrow_mut().insert(Op::Multi {
            waker: None,
            // Grown on the first receive: an idle connection holds none.
            queue: VecDeque::new(),
            pause_at,
            armed: false,
            orphaned: false,
        })
    }

    /// The next completion of multishot operation `key`, re-arming it with
    /// `arm` when the kernel ended it.
    fn poll_multi(
        &self,
        key: usize,
        cx: &mut Context<'_>,
        arm: impl FnOnce() -> squeue::Entry,
    ) -> Poll<(i32, u32)> {
        let mut ops = self.ops.borrow_mut();
        let Some(Op::Multi {
            waker,
            queue,
            armed,
            ..
        }) = ops.get_mut(key)
        else {
            unreachable!("a stream's multishot operation lives as long as the stream");
        };
        if let Some(next) = queue.pop_front() {
            return Poll::Ready(next);
        }
        let rearm = !*armed;
        *armed = true;
        *waker = Some(cx.waker().clone());
        drop(ops);
        if rearm {
            self.push(arm().user_data(key as u64));
        }
        Poll::Pending
    }

    /// Ends multishot operation `key`: cancels it if the kernel still has it
    /// and gives back the buffers of completions nobody will take.
    fn end_multi(&self, key: usize) {
        let mut ops = self.ops.borrow_mut();
        let Some(Op::Multi {
            queue,
            armed,
            orphaned,
            ..
        }) = ops.get_mut(key)
        else {
            return;
        };
        let pending: VecDeque<(i32, u32)> = std::mem::take(queue);
        if *armed {
            *orphaned = true;
            drop(ops);
            self.push(
                opcode::AsyncCancel::new(key as u64)
                    .build()
                    .user_data(UNWATCHED),
            );
        } else {
            ops.remove(key);
            drop(ops);
        }
        for (_, flags) in pending {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.buffers.recycle(bid);
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.zc_sent.get() > 0 {
            tracing::info!(
                "zero-copy sends: {}, of which the kernel copied {}",
                self.zc_sent.get(),
                self.zc_copied.get()
            );
        }
        if self.send_zc_min > 0 {
            let _ = self.uring.get_mut().submitter().unregister_buffers();
        }
        // The kernel must stop using the buffer memory before it is freed.
        let _ = self
            .uring
            .get_mut()
            .submitter()
            .unregister_buf_ring(BUF_GROUP);
    }
}

/// A single-shot operation in flight; resolves to its result and gives back
/// the memory it kept alive.
struct Completion<T: 'static> {
    ring: Rc<Ring>,
    key: usize,
    keep: Option<T>,
}

impl<T: Unpin + 'static> Future for Completion<T> {
    type Output = (i32, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, T)> {
        let this = self.get_mut();
        let mut ops = this.ring.ops.borrow_mut();
        let Some(Op::Once { waker, result, .. }) = ops.get_mut(this.key) else {
            unreachable!("an operation lives until its future resolves");
        };
        match result.take() {
            Some(result) => {
                ops.remove(this.key);
                drop(ops);
                let keep = this.keep.take().expect("polled after completion");
                Poll::Ready((result, keep))
            }
            None => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T: 'static> Drop for Completion<T> {
    fn drop(&mut self) {
        let Some(keep) = self.keep.take() else {
            return; // resolved
        };
        let mut ops = self.ring.ops.borrow_mut();
        if let Some(Op::Once { result, orphan, .. }) = ops.get_mut(self.key) {
            if result.is_some() {
                ops.remove(self.key);
                drop(ops);
                drop(keep);
            } else {
                // Still in the kernel: the ring keeps the memory until the
                // completion arrives (or the process ends).
                *orphan = Some(Box::new(keep));
                drop(ops);
                self.ring.push(
                    opcode::AsyncCancel::new(self.key as u64)
                        .build()
                        .user_data(UNWATCHED),
                );
            }
        }
    }
}

/// The core's provided buffers: a ring of `count` buffers of `size` bytes
/// that the kernel picks from for every multishot receive.
struct BufRing {
    entries: *mut BufRingEntry,
    memory: *mut u8,
    count: u16,
    size: usize,
    tail: Cell<u16>,
    /// Where each buffer was last published in the ring: a bundle's
    /// buffers are the ones in the ring slots after its first one's.
    slot_of: Box<[Cell<u16>]>,
}

impl BufRing {
    fn new(uring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        let entries_layout = Self::entries_layout(count);
        let memory_layout = Self::memory_layout(count, size);
        // SAFETY: non-zero sizes; freed in Drop with the same layouts.
        let (entries, memory) = unsafe {
            (
                std::alloc::alloc_zeroed(entries_layout).cast::<BufRingEntry>(),
                std::alloc::alloc(memory_layout),
            )
        };
        if entries.is_null() || memory.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // Touched now: the pool is a fixed cost of the core, resident from the
        // start rather than page by page as the kernel first writes into it
        // (a page fault inside a receive), and never counted against the
        // connections that happen to be open when it fills.
        // SAFETY: `memory` holds memory_layout.size() writable bytes.
        unsafe { std::ptr::write_bytes(memory, 0, memory_layout.size()) };
        let ring = BufRing {
            entries,
            memory,
            count,
            size,
            tail: Cell::new(0),
            slot_of: (0..count).map(|_| Cell::new(0)).collect(),
        };
        // SAFETY: page-aligned entries that live until Ring::drop unregisters
        // them (BufRing is dropped after that, as a field of Ring).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(entries as u64, count, BUF_GROUP, 0)?;
        }
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    fn entries_layout(count: u16) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
            .expect("buffer ring layout")
    }

    fn memory_layout(count: u16, size: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(count as usize * size, 4096).expect("buffer layout")
    }

    fn buffer(&self, bid: u16) -> *mut u8 {
        self.memory.wrapping_add(bid as usize * self.size)
    }

    /// Whether `len` bytes at `base` lie inside the pool.
    fn holds(&self, base: *const u8, len: usize) -> bool {
        let start = self.memory as usize;
        let end = start + self.count as usize * self.size;
        (start..end).contains(&(base as usize)) && base as usize + len <= end
    }

    /// The `n` buffers of a bundled receive that starts with `first`: the
    /// kernel took them from consecutive ring slots. Read before any of them
    /// is recycled, so those slots still name them.
    fn bundle(&self, first: u16, n: usize) -> impl Iterator<Item = u16> + '_ {
        let slot = self.slot_of[first as usize].get();
        (0..n as u16).map(move |i| {
            let at = slot.wrapping_add(i) & (self.count - 1);
            // SAFETY: a slot of the ring, inside its allocation.
            unsafe { (*self.entries.add(at as usize)).bid() }
        })
    }

    /// Gives buffer `bid` back to the kernel.
    fn recycle(&self, bid: u16) {
        let tail = self.tail.get();
        self.slot_of[bid as usize].set(tail);
        // SAFETY: the slot at the tail is ours until the tail is published.
        unsafe {
            let entry = &mut *self.entries.add((tail & (self.count - 1)) as usize);
            entry.set_addr(self.buffer(bid) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            let shared = BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(shared).store(tail.wrapping_add(1), Ordering::Release);
        }
        self.tail.set(tail.wrapping_add(1));
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in new with these layouts; unregistered by now.
        unsafe {
            std::alloc::dealloc(self.entries.cast(), Self::entries_layout(self.count));
            std::alloc::dealloc(self.memory, Self::memory_layout(self.count, self.size));
        }
    }
}

/// A provided buffer the kernel filled, the connection's until dropped.
pub struct Provided {
    ring: Rc<Ring>,
    bid: u16,
}

impl Drop for Provided {
    fn drop(&mut self) {
        self.ring.buffers.recycle(self.bid);
    }
}

/// A session's receive buffer on this backend.
pub enum RecvBuf {
    /// Nothing held: the state of an idle connection.
    Empty,
    /// Straight from the kernel: parsed, unmasked and echoed where it lies.
    Provided(Provided),
    /// A frame that spans receives, gathered into memory of the connection's.
    Owned(Vec<u8>),
}

impl Deref for RecvBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RecvBuf::Empty => &[],
            // SAFETY: the buffer is ours (the kernel gave it and has not got
            // it back) and `size` bytes long.
            RecvBuf::Provided(p) => unsafe {
                std::slice::from_raw_parts(p.ring.buffers.buffer(p.bid), p.ring.buffers.size)
            },
            RecvBuf::Owned(v) => v,
        }
    }
}

impl DerefMut for RecvBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            RecvBuf::Empty => &mut [],
            // SAFETY: as in deref, and only this handle refers to it.
            RecvBuf::Provided(p) => unsafe {
                std::slice::from_raw_parts_mut(p.ring.buffers.buffer(p.bid), p.ring.buffers.size)
            },
            RecvBuf::Owned(v) => v,
        }
    }
}

/// A multishot accept on a worker's listener.
pub struct Acceptor {
    ring: Rc<Ring>,
    listener: OwnedFd,
    key: usize,
}

impl Acceptor {
    pub fn new(ring: Rc<Ring>, listener: std::net::TcpListener) -> io::Result<Acceptor> {
        // The ring waits for connections itself.
        listener.set_nonblocking(false)?;
        let key = ring.multi(None);
        Ok(Acceptor {
            ring,
            listener: listener.into(),
            key,
        })
    }

    /// The next connection, as a non-blocking tokio socket for the HTTP phase.
    pub async fn accept(&self) -> io::Result<tokio::net::TcpStream> {
        let fd = Fd(self.listener.as_raw_fd());
        let (result, _) = poll_fn(|cx| {
            self.ring.poll_multi(self.key, cx, || {
                opcode::AcceptMulti::new(fd)
                    .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                    .build()
            })
        })
        .await;
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        // SAFETY: a descriptor the kernel just gave us.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(result) };
        tokio::net::TcpStream::from_std(stream)
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.ring.end_multi(self.key);
    }
}

/// A WebSocket connection served on the ring.
pub struct RingStream {
    ring: Rc<Ring>,
    fd: OwnedFd,
    /// The multishot receive.
    recv: usize,
}

/// What a write keeps alive while the kernel sends it.
struct WriteState {
    buf: RecvBuf,
    out: Vec<Out>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

impl RingStream {
    /// Takes over a socket that finished its HTTP phase on tokio's reactor.
    pub fn from_tokio(stream: tokio::net::TcpStream, ring: Rc<Ring>) -> io::Result<Self> {
        let std = stream.into_std()?;
        // The ring waits for data itself; a non-blocking socket would make
        // sends that meet a full window fail with EAGAIN instead.
        std.set_nonblocking(false)?;
        let recv = ring.multi(Some(MAX_QUEUED));
        Ok(RingStream {
            ring,
            // SAFETY: the descriptor comes from an owned socket.
            fd: unsafe { OwnedFd::from_raw_fd(std.into_raw_fd()) },
            recv,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next receive completion: bytes in a provided buffer, or `None`
    /// when the peer closed.
    async fn next_chunk(&self) -> io::Result<Option<(Provided, usize)>> {
        let fd = Fd(self.raw());
        loop {
            let (result, flags) = poll_fn(|cx| {
                self.ring.poll_multi(self.recv, cx, || {
                    if self.ring.bundles {
                        opcode::RecvMultiBundle::new(fd, BUF_GROUP).build()
                    } else {
                        opcode::RecvMulti::new(fd, BUF_GROUP).build()
                    }
                })
            })
            .await;
            if let Some(bid) = cqueue::buffer_select(flags) {
                let chunk = Provided {
                    ring: self.ring.clone(),
                    bid,
                };
                return Ok(Some((chunk, result.max(0) as usize)));
            }
            match -result {
                0 => return Ok(None),
                // The pool ran dry or the receive was paused while the session
                // was busy: let other connections give buffers back, re-arm.
                libc::ENOBUFS | libc::ECANCELED => tokio::task::yield_now().await,
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
        }
    }

    /// Sends everything `state.iov` points to.
    async fn send_all(&self, mut state: Box<WriteState>) -> (io::Result<()>, Box<WriteState>) {
        let mut first = 0;
        loop {
            while first < state.iov.len() && state.iov[first].iov_len == 0 {
                first += 1;
            }
            if first == state.iov.len() {
                return (Ok(()), state);
            }
            let min = self.ring.send_zc_min;
            let zero_copy =
                min > 0 && state.iov[first..].iter().map(|v| v.iov_len).sum::<usize>() >= min;
            let fd = Fd(self.raw());
            let entry = if first + 1 == state.iov.len() {
                let iov = state.iov[first];
                let (base, len) = (iov.iov_base.cast::<u8>(), iov.iov_len as u32);
                if zero_copy {
                    let registered = self.ring.buffers.holds(base, len as usize).then_some(0);
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
                let iov = state.iov[first..].as_mut_ptr();
                state.msg.msg_iov = iov;
                state.msg.msg_iovlen = state.iov.len() - first;
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
            let (result, back) = self.ring.start(entry, state).await;
            state = back;
            if result <= 0 {
                let error = match result {
                    0 => io::ErrorKind::WriteZero.into(),
                    e => io::Error::from_raw_os_error(-e),
                };
                return (Err(error), state);
            }
            let mut sent = result as usize;
            for iov in &mut state.iov[first..] {
                let n = sent.min(iov.iov_len);
                iov.iov_base = iov.iov_base.wrapping_add(n);
                iov.iov_len -= n;
                sent -= n;
                if sent == 0 {
                    break;
                }
            }
        }
    }
}

impl Io for RingStream {
    type Buf = RecvBuf;

    fn buffer(&self, initial: &[u8], capacity: usize) -> RecvBuf {
        if initial.is_empty() {
            return RecvBuf::Empty;
        }
        let mut owned = Vec::with_capacity(capacity.max(initial.len()));
        owned.extend_from_slice(initial);
        RecvBuf::Owned(owned)
    }

    async fn read(&self, buf: RecvBuf, held: usize) -> (io::Result<usize>, RecvBuf) {
        if held == 0 {
            // Give the last buffer back before waiting: idle costs nothing.
            drop(buf);
            return match self.next_chunk().await {
                Ok(Some((chunk, n))) => (Ok(n), RecvBuf::Provided(chunk)),
                Ok(None) => (Ok(0), RecvBuf::Empty),
                Err(e) => (Err(e), RecvBuf::Empty),
            };
        }
        let (chunk, n) = match self.next_chunk().await {
            Ok(Some(next)) => next,
            Ok(None) => return (Ok(0), buf),
            Err(e) => return (Err(e), buf),
        };
        // A frame continues in the new chunk: gather both into owned memory.
        let mut owned = match buf {
            RecvBuf::Owned(mut v) => {
                v.truncate(held);
                v
            }
            other => {
                let mut v = Vec::with_capacity(self.ring.buffers.size.max(held + n));
                v.extend_from_slice(&other[..held]);
                v
            }
        };
        owned.extend_from_slice(&RecvBuf::Provided(chunk)[..n]);
        (Ok(n), RecvBuf::Owned(owned))
    }

    async fn write(&self, buf: RecvBuf, out: &mut Vec<Out>) -> (io::Result<()>, RecvBuf) {
        let mut state = self.ring.write_state();
        std::mem::swap(&mut state.out, out);
        state.buf = buf;
        state.iov.clear();
        let WriteState {
            buf,
            out: pieces,
            iov,
            ..
        } = &mut *state;
        for piece in pieces.iter() {
            let slice: &[u8] = match piece {
                Out::Recv(range) => &buf[range.clone()],
                Out::Owned(frame, start) => &frame[*start..],
            };
            iov.push(libc::iovec {
                iov_base: slice.as_ptr() as *mut libc::c_void,
                iov_len: slice.len(),
            });
        }
        let (result, mut state) = self.send_all(state).await;
        super::recycle(&mut state.out);
        let buf = std::mem::replace(&mut state.buf, RecvBuf::Empty);
        self.ring.give_back(state);
        (result, buf)
    }

    async fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        let mut state = self.ring.write_state();
        state.iov.clear();
        state.iov.push(libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        });
        state.out.push(Out::Owned(frame, 0));
        let (result, mut state) = self.send_all(state).await;
        state.out.clear();
        self.ring.give_back(state);
        result
    }

    fn shutdown(&self) {
        // SAFETY: plain syscall on our descriptor.
        unsafe { libc::shutdown(self.raw(), libc::SHUT_RDWR) };
    }
}

impl Drop for RingStream {
    fn drop(&mut self) {
        self.ring.end_multi(self.recv);
    }
}

//! The ring: submissions queued by the state machines, one `io_uring_enter`
//! per wake-up, completions copied out in batches.

use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types::Fd, IoUring};

/// A completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cqe {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Cqe {
    /// More completions of the same multishot operation (or a zero-copy
    /// send's notification) follow: the operation is still in flight.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// A zero-copy send's notification: the kernel let go of its memory.
    pub fn notif(&self) -> bool {
        cqueue::notif(self.flags)
    }

    /// The provided buffer the kernel filled, if any (the first of a bundle).
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// One worker's io_uring.
pub struct Ring {
    uring: IoUring,
    /// Receives may fill several provided buffers per completion (6.10+).
    bundles: bool,
}

/// Byte offset of `len` in `struct io_uring_sqe` (the kernel's ABI, which
/// never moves a field): opcode, flags, ioprio, fd, off, addr, then len.
const SQE_LEN_OFFSET: usize = 24;
/// IORING_ENTER_GETEVENTS (io_uring.h).
const ENTER_GETEVENTS: u32 = 1;

impl Ring {
    /// A ring for one thread: SINGLE_ISSUER (only this thread submits) and
    /// DEFER_TASKRUN (the kernel's completion work runs inside our own
    /// io_uring_enter, not in interrupts of whatever we are doing).
    pub fn new(entries: u32) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 8)
            .build(entries)?;
        let bundles = uring.params().is_feature_recvsend_bundle();
        Ok(Ring { uring, bundles })
    }

    pub fn bundles(&self) -> bool {
        self.bundles
    }

    /// Queues a submission; it goes in with the next [`Ring::wait`] or
    /// [`Ring::poll`]. A full submission queue is submitted at once. An
    /// error means the entry was not queued: its operation is not in flight
    /// and no completion will come for it.
    ///
    /// # Safety
    /// Every pointer in `entry` (buffers, iovecs, msghdr) must stay valid and
    /// unmoved until the operation's last completion has been reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..8 {
            // SAFETY: the caller keeps the entry's memory alive.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // The completion queue is full (EBUSY): reaping makes room.
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Submits what is queued and sleeps until at least one completion is
    /// waiting or `timeout` has passed (None: no timeout). The one place a
    /// worker blocks.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let entered = match timeout {
            Some(t) if t.is_zero() => return self.poll(),
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
            None => self.uring.submitter().submit_and_wait(1),
        };
        match entered {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued and runs the deferred completion work,
    /// without waiting.
    pub fn poll(&mut self) -> io::Result<()> {
        // SAFETY: no argument; GETEVENTS with min_complete 0 runs the
        // deferred task work without waiting.
        let len = self.uring.submission().len() as u32;
        match unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(len, 0, ENTER_GETEVENTS, None)
        } {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Copies up to `batch.len()` completions out; returns how many. Copied,
    /// so that handling them may queue new submissions.
    pub fn reap(&mut self, batch: &mut [Cqe]) -> usize {
        let mut n = 0;
        for cqe in self.uring.completion().take(batch.len()) {
            batch[n] = Cqe {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            };
            n += 1;
        }
        n
    }

    /// A multishot receive into buffer group `group`, bundled where the
    /// kernel can, each completion capped at `max_len` bytes (0: no cap), so
    /// that one connection's completion cannot take a large part of the pool.
    pub fn recv_multi(&self, fd: i32, group: u16, max_len: u32) -> squeue::Entry {
        let entry = if self.bundles {
            opcode::RecvMultiBundle::new(Fd(fd), group).build()
        } else {
            opcode::RecvMulti::new(Fd(fd), group).build()
        };
        with_len(entry, max_len)
    }

    /// Cancels every operation whose user_data is `target`; the cancel's own
    /// completion carries `user_data`.
    pub fn cancel(&self, target: u64, user_data: u64) -> squeue::Entry {
        opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data)
    }

    /// The raw submitter, for registrations.
    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }
}

/// Sets an entry's `len` field, which the io-uring crate's multishot
/// receive builders leave at 0.
fn with_len(entry: squeue::Entry, len: u32) -> squeue::Entry {
    let mut entry = entry;
    // SAFETY: squeue::Entry is #[repr(C)] over struct io_uring_sqe (64
    // bytes), whose `len` is a u32 at SQE_LEN_OFFSET; the write is in bounds
    // and aligned (24 is a multiple of 4, the entry is 8-aligned).
    unsafe {
        let base = (&mut entry as *mut squeue::Entry).cast::<u8>();
        base.add(SQE_LEN_OFFSET).cast::<u32>().write(len);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_len_writes_the_kernels_len_field() {
        // A Read's length is its `len` field: build one with length 7, zero
        // it through with_len's offset, and compare with a Read of length 0.
        fn image(entry: &squeue::Entry) -> [u8; 64] {
            // SAFETY: an Entry is 64 plain bytes (repr(C) io_uring_sqe).
            unsafe { std::ptr::read((entry as *const squeue::Entry).cast()) }
        }
        let buf = [0u8; 16];
        let read = |len| opcode::Read::new(Fd(3), buf.as_ptr() as *mut u8, len).build();
        assert_eq!(image(&with_len(read(7), 0)), image(&read(0)));
        assert_eq!(image(&with_len(read(0), 7)), image(&read(7)));
        assert_ne!(image(&read(0)), image(&read(7)));
    }

    #[test]
    fn wait_returns_at_its_timeout_with_nothing_in_flight() {
        let mut ring = Ring::new(8).unwrap();
        let started = std::time::Instant::now();
        ring.wait(Some(Duration::from_millis(20))).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(15));
        let mut batch = [Cqe::default(); 4];
        assert_eq!(ring.reap(&mut batch), 0);
    }

    #[test]
    fn a_pushed_operation_completes_through_wait() {
        let mut ring = Ring::new(8).unwrap();
        let nop = opcode::Nop::new().build().user_data(42);
        // SAFETY: a Nop names no memory.
        unsafe { ring.push(&nop).unwrap() };
        ring.wait(None).unwrap();
        let mut batch = [Cqe::default(); 4];
        assert_eq!(ring.reap(&mut batch), 1);
        assert_eq!((batch[0].user_data, batch[0].result), (42, 0));
    }
}

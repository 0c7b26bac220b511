//! Waking a loop from another thread: an eventfd that the loop reads
//! through its own ring, so that a wake-up is one more completion and the
//! loop still blocks in one place. Hub broadcasts and shutdown ring it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{opcode, types::Fd};

use crate::Ring;

/// The thread-safe side: any thread may ring it.
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub fn new() -> io::Result<Arc<Doorbell>> {
        // SAFETY: plain syscall; the descriptor is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Arc::new(Doorbell {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// Wakes the loop that reads this doorbell (at once if it sleeps, at its
    /// next wait otherwise). Rings between two reads merge into one.
    pub fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to our own eventfd.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The loop's side: one read of the eventfd kept in flight.
pub struct DoorbellReader {
    bell: Arc<Doorbell>,
    /// Where the kernel writes the count. Leaked (8 bytes per loop, once):
    /// a read in flight when the loop ends may still complete into it while
    /// the ring is torn down, so it must never be freed.
    count: &'static mut u64,
}

impl DoorbellReader {
    pub fn new(bell: Arc<Doorbell>) -> DoorbellReader {
        DoorbellReader {
            bell,
            count: Box::leak(Box::new(0)),
        }
    }

    /// Puts the read in flight; its completion carries `user_data`. Call
    /// again after each of its completions.
    pub fn arm(&mut self, ring: &mut Ring, user_data: u64) -> io::Result<()> {
        let read = opcode::Read::new(
            Fd(self.bell.fd.as_raw_fd()),
            (self.count as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(user_data);
        // SAFETY: `count` is 'static.
        unsafe { ring.push(&read) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cqe;
    use std::time::{Duration, Instant};

    #[test]
    fn another_thread_wakes_a_waiting_loop() {
        let mut ring = Ring::new(8).unwrap();
        let bell = Doorbell::new().unwrap();
        let mut reader = DoorbellReader::new(bell.clone());
        reader.arm(&mut ring, 7).unwrap();
        let started = Instant::now();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            bell.ring();
        });
        ring.wait(Some(Duration::from_secs(10))).unwrap();
        let mut batch = [Cqe::default(); 4];
        assert_eq!(ring.reap(&mut batch), 1);
        assert_eq!((batch[0].user_data, batch[0].result), (7, 8));
        assert!(started.elapsed() < Duration::from_secs(5));
        ringer.join().unwrap();
    }
}

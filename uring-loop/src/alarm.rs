//! The loop's wake-up deadline as one timeout operation in the ring.
//!
//! Giving `io_uring_enter` a timeout arms a kernel timer on every wait that
//! sleeps and cancels it on every wake-up that came first. Where programming
//! the CPU's timer is dear (a virtual machine, where each reprogramming is
//! an exit to the hypervisor: 13.6 µs per arm and cancel of a 20 µs timer,
//! measured on the 2-core VM of results/loadgen-saturation.md, against
//! 1.7 µs for a timer that is not the CPU's earliest), a loop that wakes
//! tens of thousands of times a second spends a third of its core on that.
//!
//! An alarm is a single IORING_OP_TIMEOUT left in the ring: the loop waits
//! with no timeout of its own and the alarm's expiry is one more completion.
//! The alarm is moved only when a deadline earlier than its own is asked
//! for; an alarm that turns out to be early simply wakes the loop once, which
//! then finds nothing due and sets the next one. So a loop whose deadlines
//! only move later (a schedule of sends, a once-a-second report) arms one
//! timer per expiry and never cancels one.

use std::io;
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types::Timespec;

use crate::ring::{Cqe, Ring};

pub struct Alarm {
    /// user_data of the timeout; its update's completion carries
    /// `user_data + 1`, which [`Alarm::completed`] ignores.
    user_data: u64,
    /// The deadline of the timeout in the kernel, if one is there.
    armed: Option<Instant>,
    /// The timeout's duration. The kernel copies it when it takes the
    /// submission (at the next `io_uring_enter`), so it is boxed to stay at
    /// one address until then, and a later set() rewrites it only after that
    /// enter: the loop sets the alarm once per turn, just before its wait.
    ts: Box<Timespec>,
}

impl Alarm {
    /// An alarm whose completions carry `user_data` (and `user_data + 1`).
    pub fn new(user_data: u64) -> Alarm {
        Alarm {
            user_data,
            armed: None,
            ts: Box::new(Timespec::new()),
        }
    }

    /// Makes sure the loop wakes by `deadline`: arms the alarm if none is in
    /// the ring, moves it if it is later, and leaves an earlier one alone.
    /// Call once per turn, before [`Ring::wait`] (which submits it).
    pub fn set(&mut self, ring: &mut Ring, deadline: Instant, now: Instant) -> io::Result<()> {
        if self.armed.is_some_and(|at| at <= deadline) {
            return Ok(());
        }
        // At least 1 µs: a zero timeout is not a timer at all.
        let after = deadline
            .saturating_duration_since(now)
            .max(Duration::from_micros(1));
        *self.ts = Timespec::from(after);
        let entry = match self.armed {
            None => opcode::Timeout::new(&*self.ts)
                .build()
                .user_data(self.user_data),
            Some(_) => opcode::TimeoutUpdate::new(self.user_data, &*self.ts)
                .build()
                .user_data(self.user_data + 1),
        };
        // SAFETY: the entry points at `*self.ts`, boxed in self and not
        // rewritten before the next enter submits the entry (see `ts`).
        unsafe { ring.push(&entry)? };
        self.armed = Some(deadline);
        Ok(())
    }

    /// Takes a completion if it is the alarm's: true when it was (expiry,
    /// cancellation or an update's answer), false for anybody else's.
    pub fn completed(&mut self, cqe: &Cqe) -> bool {
        if cqe.user_data == self.user_data {
            // Expired (-ETIME) or cancelled: no timeout in the ring now. An
            // update that lost the race with the expiry answers -ENOENT on
            // its own user_data, and this completion still comes.
            self.armed = None;
            true
        } else {
            cqe.user_data == self.user_data + 1
        }
    }

    /// Whether a timeout is in the ring (it must complete before the ring
    /// is dropped with memory it names; the timespec is copied at
    /// submission, so dropping the ring with it armed is safe).
    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for_alarm(ring: &mut Ring, alarm: &mut Alarm) -> Vec<Cqe> {
        let mut seen = Vec::new();
        let mut batch = [Cqe::default(); 8];
        while alarm.armed() {
            ring.wait(None).unwrap();
            let n = ring.reap(&mut batch);
            for cqe in &batch[..n] {
                assert!(alarm.completed(cqe));
                seen.push(*cqe);
            }
        }
        seen
    }

    #[test]
    fn fires_once_at_its_deadline() {
        let mut ring = Ring::new(8).unwrap();
        let mut alarm = Alarm::new(7 << 8);
        let start = Instant::now();
        alarm
            .set(&mut ring, start + Duration::from_millis(20), start)
            .unwrap();
        let seen = wait_for_alarm(&mut ring, &mut alarm);
        assert!(start.elapsed() >= Duration::from_millis(19));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].result, -libc::ETIME);
    }

    #[test]
    fn a_later_deadline_leaves_it_and_an_earlier_one_moves_it() {
        let mut ring = Ring::new(8).unwrap();
        let mut alarm = Alarm::new(9 << 8);
        let start = Instant::now();
        alarm
            .set(&mut ring, start + Duration::from_secs(10), start)
            .unwrap();
        ring.poll().unwrap();
        // Earlier: the timeout in the ring is moved, not doubled.
        alarm
            .set(&mut ring, start + Duration::from_millis(20), start)
            .unwrap();
        // Later than the armed one: nothing to do.
        alarm
            .set(&mut ring, start + Duration::from_secs(5), start)
            .unwrap();
        let seen = wait_for_alarm(&mut ring, &mut alarm);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(19), "{waited:?}");
        assert!(waited < Duration::from_secs(4), "{waited:?}");
        // The update's answer (0) and the moved timeout's expiry.
        let update = seen.iter().find(|c| c.user_data == (9 << 8) + 1).unwrap();
        assert_eq!(update.result, 0);
        let expiry = seen.iter().find(|c| c.user_data == 9 << 8).unwrap();
        assert_eq!(expiry.result, -libc::ETIME);
    }
}

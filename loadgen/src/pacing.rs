//! Sends on time on the tokio client: a timer to the microsecond, and a
//! real-time priority for the thread that sends a broadcast.
//!
//! tokio's own timers tick in milliseconds, far too coarse for latencies of
//! tens of microseconds. A timerfd is as precise as the kernel's high
//! resolution timers and wakes the runtime through the same epoll as the
//! sockets, so the thread sleeps until a send is due instead of spinning
//! through the last millisecond.
//!
//! A broadcast's sends share a core with a thousand receivers, whose
//! deliveries come in bursts of one per receiver. Queued behind such a burst
//! a send left a millisecond late (p99), so its senders run on a thread of
//! their own at the lowest real-time priority: the kernel runs it the moment
//! its timer fires, it sends and sleeps again, and the deliveries it
//! interrupts wait microseconds.

use std::io;
use std::os::fd::OwnedFd;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::{Duration, Instant};

/// Gaps between sends shorter than this are spun through, yielding to the
/// connections, rather than slept: on a virtual machine a timer armed and
/// fired costs about as much CPU as a message, and at such rates the thread
/// has a connection to serve in the gap anyway. (Never on a real-time
/// thread.)
pub const SPIN_BELOW: Duration = Duration::from_micros(50);

/// A one-shot timer on CLOCK_MONOTONIC (the clock tokio's `Instant` reads),
/// armed again for each sleep.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    /// Needs a tokio runtime with IO enabled.
    pub fn new() -> io::Result<Self> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the OwnedFd is an open timerfd, owned by the AsyncFd for
        // all of its life and never replaced, so its raw descriptor stays
        // the same open file.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Timer { fd })
    }

    /// Returns at `due` or within microseconds after it; at once when it
    /// has passed.
    pub async fn sleep_until(&self, due: Instant) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= due {
                return Ok(());
            }
            let wait = due - now;
            // A relative time: the two clocks are the same, and a zero
            // it_value would disarm the timer rather than fire it (wait is
            // never zero here).
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            timerfd_settime(
                self.fd.get_ref(),
                TimerfdTimerFlags::empty(),
                &Itimerspec {
                    it_interval: zero,
                    it_value: Timespec {
                        tv_sec: wait.as_secs() as _,
                        tv_nsec: wait.subsec_nanos() as _,
                    },
                },
            )?;
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // Readable from an earlier arming, cleared by this one: would
            // block, and the loop waits again.
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut expirations).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// Runs the calling thread under SCHED_FIFO at the lowest real-time
/// priority. It must sleep between its bursts of work, as a pacer does: a
/// real-time thread that spins would starve the others on its core (and the
/// kernel's real-time throttling would still leave them 5 %). Refused
/// without CAP_SYS_NICE (or an RLIMIT_RTPRIO above 0).
pub fn run_realtime() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler only reads `param`, a valid sched_param
    // that outlives the call; pid 0 names the calling thread, whose
    // scheduling is all it changes.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_fires_on_time_and_at_once_for_a_past_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let timer = Timer::new().unwrap();
            for wait in [50u64, 300, 1500, 20] {
                let due = Instant::now() + Duration::from_micros(wait);
                timer.sleep_until(due).await.unwrap();
                // Never early; how late is for benchmarks to show, but
                // tokio's own timer would round this up to a millisecond
                // or more, which a timerfd must not.
                assert!(Instant::now() >= due, "woke before {wait} µs");
            }
            let past = Instant::now() - Duration::from_millis(5);
            let before = Instant::now();
            timer.sleep_until(past).await.unwrap();
            assert!(before.elapsed() < Duration::from_millis(5));
            // Armed again after it fired and was read, and after an arming
            // that was never waited on.
            let due = Instant::now() + Duration::from_millis(2);
            timer.sleep_until(due).await.unwrap();
            assert!(Instant::now() >= due);
        });
    }

    #[test]
    fn a_realtime_thread_runs_under_sched_fifo_or_is_refused_plainly() {
        std::thread::spawn(|| match run_realtime() {
            Ok(()) => {
                // SAFETY: sched_getscheduler takes no pointer; pid 0 is this
                // thread.
                let policy = unsafe { libc::sched_getscheduler(0) };
                assert_eq!(policy, libc::SCHED_FIFO);
            }
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
        })
        .join()
        .unwrap();
    }
}

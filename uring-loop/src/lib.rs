//! One completion-driven io_uring event loop per core.
//!
//! A worker owns one [`Ring`] and blocks in exactly one place: the
//! `io_uring_enter` of [`Ring::wait`], which submits everything queued since
//! the last call, runs the kernel's deferred completion work (DEFER_TASKRUN)
//! and sleeps until a completion arrives or the next timer is due. The
//! caller then takes the completions ([`Ring::reap`]) and calls its own state
//! machines with them: no futures, no wakers, no second poller.
//!
//! Beside the ring:
//! - [`buffers`]: a provided-buffer ring that multishot receives fill, so
//!   that an idle connection holds no receive memory;
//! - [`timers`]: deadlines, the earliest of which bounds the wait;
//! - [`alarm`]: that bound as one timeout operation in the ring, for loops
//!   that wake so often that arming a timer per wait would cost;
//! - [`doorbell`]: how another thread wakes this loop (an eventfd read
//!   through the ring, so the wake-up is one more completion);
//! - [`ops`]: user_data encoding and the count of operations in flight that
//!   decides when a descriptor may be closed.
//!
//! It knows nothing of WebSockets or HTTP; the engine and the load generator
//! run their connections on it.

pub mod alarm;
pub mod buffers;
pub mod doorbell;
pub mod ops;
pub mod ring;
pub mod timers;

pub use alarm::Alarm;
pub use buffers::BufRing;
pub use doorbell::{Doorbell, DoorbellReader};
pub use ops::{InFlight, UserData};
pub use ring::{Cqe, Ring};
pub use timers::Timers;

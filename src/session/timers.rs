//! The deadlines of one WebSocket session: the keep-alive ping, the client
//! timeout and the wait for the client's close. One earliest deadline at a
//! time, so a driver needs one timer per connection.

use std::time::{Duration, Instant};

use crate::options::Options;

/// How long to wait for the client's close after the server sent its own
/// because of a protocol violation.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the session's single timer is waiting for: shared by the tokio
/// driver (`driver::task`) and the native ring's connections.
pub(crate) struct Timers {
    keep_alive: Option<Duration>,
    next_ping: Option<Instant>,
    client_timeout: Option<Duration>,
    last_received: Instant,
    close_deadline: Option<Instant>,
}

pub(crate) enum Due {
    Ping,
    ClientTimeout,
    CloseWaitOver,
}

impl Timers {
    pub(crate) fn new(options: &Options, keep_alive: Option<Duration>) -> Self {
        let now = Instant::now();
        Timers {
            keep_alive,
            next_ping: keep_alive.map(|every| now + every),
            client_timeout: options.client_timeout(),
            last_received: now,
            close_deadline: None,
        }
    }

    /// The earliest deadline. The client timeout is re-armed lazily: a read
    /// only records the time, and the timer checks it when it fires.
    pub(crate) fn next(&self) -> Option<Instant> {
        [
            self.next_ping,
            self.client_timeout.map(|t| self.last_received + t),
            self.close_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the close wait ends, once a close was sent.
    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        self.close_deadline
    }

    pub(crate) fn received(&mut self) {
        if self.client_timeout.is_some() {
            self.last_received = Instant::now();
        }
    }

    pub(crate) fn closing(&mut self, wait: Duration) {
        self.next_ping = None;
        self.client_timeout = None;
        let deadline = Instant::now() + wait;
        self.close_deadline = Some(self.close_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    pub(crate) fn due(&mut self, now: Instant) -> Option<Due> {
        if self.close_deadline.is_some_and(|d| d <= now) {
            return Some(Due::CloseWaitOver);
        }
        if self
            .client_timeout
            .is_some_and(|t| self.last_received + t <= now)
        {
            return Some(Due::ClientTimeout);
        }
        if let (Some(at), Some(every)) = (self.next_ping, self.keep_alive) {
            if at <= now {
                self.next_ping = Some(now + every);
                return Some(Due::Ping);
            }
        }
        None
    }
}

//! What a load thread shares with the main thread, on either client (the
//! tokio one in `run`, the io_uring one in `ring`): its reports, its
//! counts, and the timings of its end.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::result::Errors;

/// How long after the end of the run outstanding echoes are still awaited.
pub(crate) const DRAIN: Duration = Duration::from_secs(2);
/// How long the server has to answer our close.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// With --connection-stages, how often a waiting connection looks at the
/// count again: a count reached shows within this.
pub(crate) const STAGE_TICK: Duration = Duration::from_millis(5);

/// What a load thread tells the main thread.
pub(crate) enum Report {
    Connected {
        histogram: Histogram<u64>,
        /// Only the connect failures are counted here.
        failures: Errors,
    },
    Second {
        index: usize,
        histogram: Histogram<u64>,
        messages: u64,
    },
    Done {
        histogram: Histogram<u64>,
        /// Constant rate: how late each send left, µs.
        send_lag: Histogram<u64>,
        counts: Counts,
    },
}

#[derive(Default, Clone)]
pub(crate) struct Counts {
    pub(crate) errors: Errors,
    pub(crate) unanswered: u64,
    /// Broadcast: messages sent; deliveries, new and duplicated.
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) duplicated: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.errors.add(&other.errors);
        self.unanswered += other.unanswered;
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
    }
}

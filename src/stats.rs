//! Per-core counters, written only by their own worker and summed only when
//! `/stats` is read.
//!
//! Each worker owns one [`WorkerStats`], aligned to its own cache lines so that
//! no two cores write the same line. A counter has exactly one writer, so it
//! is updated with a relaxed load and store instead of a locked
//! read-modify-write: the per-message path costs two plain moves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;

/// A counter with a single writer (its worker) and any number of readers.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Close codes counted one by one; anything else lands in `other`.
/// 1006 is never sent on the wire: it counts connections that ended without
/// a close frame in either direction.
pub const CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011];

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The live counters of one worker.
        #[repr(align(128))]
        #[derive(Default)]
        pub struct WorkerStats {
            $($(#[$doc])* pub $name: Counter,)*
            /// How connections ended, by close code (see [`CLOSE_CODES`]).
            closes: [Counter; CLOSE_CODES.len() + 1],
        }

        /// A copy of one worker's counters, or of their sum.
        #[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
        pub struct Counts {
            $(pub $name: u64,)*
            /// Connections ended, by close code; "other" for codes not listed.
            pub closes: BTreeMap<String, u64>,
        }

        impl WorkerStats {
            pub fn snapshot(&self) -> Counts {
                let closes = CLOSE_CODES
                    .iter()
                    .map(|c| c.to_string())
                    .chain(std::iter::once("other".to_string()))
                    .zip(&self.closes)
                    .map(|(k, c)| (k, c.get()))
                    .collect();
                Counts { $($name: self.$name.get(),)* closes }
            }
        }

        impl Counts {
            fn add(&mut self, other: &Counts) {
                $(self.$name += other.$name;)*
                for (k, v) in &other.closes {
                    *self.closes.entry(k.clone()).or_default() += v;
                }
            }
        }
    };
}

counters! {
    /// TCP connections open now, in HTTP or WebSocket phase.
    open_connections,
    /// WebSocket sessions open now.
    open_websockets,
    /// WebSocket sessions open now with permessage-deflate agreed.
    deflate_sessions,
    /// Memory of the compression contexts those sessions hold of their own
    /// (--deflate dedicated), by zlib's formula; shared contexts not counted.
    deflate_context_bytes,
    /// TCP connections accepted since start.
    accepted,
    /// Connections upgraded to WebSocket since start.
    upgraded,
    /// Complete messages received (after reassembly of fragments).
    messages_in,
    /// Messages echoed.
    messages_out,
    /// Payload bytes received in complete messages.
    bytes_in,
    /// Payload bytes echoed.
    bytes_out,
    /// Ping frames sent by the keep-alive timer.
    keep_alive_pings,
    /// Connections closed because the client sent nothing within --client-timeout.
    client_timeouts,
    /// WebSocket requests refused with 403 because of their Origin.
    origins_refused,
    /// Requests answered 400 or 426: malformed or incomplete upgrade requests.
    bad_requests,
    /// Errors returned by accept (EMFILE and the like).
    accept_errors,
    /// Connections refused with 503 because --max-connections were open.
    refused,
    /// Connections closed because output for them piled up (--max-pending-bytes).
    overflows,
}

impl WorkerStats {
    pub fn count_close(&self, code: u16) {
        let slot = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.closes[slot].add(1);
    }
}

/// The counters of every worker, shared read-only across cores.
pub struct EngineStats {
    workers: Vec<WorkerStats>,
    /// The core each worker is pinned to, if pinned.
    cores: Vec<Option<usize>>,
}

#[derive(Debug, Serialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub core: Option<usize>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub workers: Vec<WorkerReport>,
    pub totals: Counts,
}

impl EngineStats {
    pub fn new(cores: Vec<Option<usize>>) -> Arc<Self> {
        let workers = cores.iter().map(|_| WorkerStats::default()).collect();
        Arc::new(EngineStats { workers, cores })
    }

    pub fn worker(&self, index: usize) -> &WorkerStats {
        &self.workers[index]
    }

    pub fn report(&self) -> Report {
        let workers: Vec<WorkerReport> = self
            .workers
            .iter()
            .zip(&self.cores)
            .enumerate()
            .map(|(worker, (stats, &core))| WorkerReport {
                worker,
                core,
                counts: stats.snapshot(),
            })
            .collect();
        let mut totals = Counts::default();
        for w in &workers {
            totals.add(&w.counts);
        }
        Report { workers, totals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_sum_of_workers() {
        let stats = EngineStats::new(vec![Some(0), Some(1)]);
        stats.worker(0).messages_in.add(3);
        stats.worker(1).messages_in.add(4);
        stats.worker(1).count_close(1000);
        stats.worker(0).count_close(4321);
        stats.worker(0).open_connections.add(2);
        stats.worker(0).open_connections.sub(1);
        let report = stats.report();
        assert_eq!(report.totals.messages_in, 7);
        assert_eq!(report.totals.open_connections, 1);
        assert_eq!(report.totals.closes["1000"], 1);
        assert_eq!(report.totals.closes["other"], 1);
        assert_eq!(report.workers[1].core, Some(1));
    }
}

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
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Whether a figure only grows (a Prometheus counter) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One figure of [`Counts`] as `/metrics` names it.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// The field's name in `/stats`.
    pub name: &'static str,
    /// The Prometheus name, without the `ringecho_` prefix and the `_total`
    /// suffix of counters.
    pub metric: &'static str,
    pub kind: Kind,
    /// The field's doc comment.
    pub help: &'static str,
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $kind:ident $name:ident as $metric:literal),* $(,)?) => {
        /// The live counters of one worker.
        #[repr(align(128))]
        #[derive(Default)]
        pub struct WorkerStats {
            $($(#[doc = $doc])* pub $name: Counter,)*
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
            /// Every figure but the close codes, in the order of `/stats`.
            pub const FIGURES: &'static [Figure] = &[$(Figure {
                name: stringify!($name),
                metric: $metric,
                kind: Kind::$kind,
                help: concat!($($doc),*),
            },)*];

            /// The figures' values, in the order of [`Counts::FIGURES`].
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name,)*]
            }

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
    Gauge open_connections as "open_connections",
    /// WebSocket sessions open now.
    Gauge open_websockets as "open_websockets",
    /// WebSocket sessions open now with permessage-deflate agreed.
    Gauge deflate_sessions as "deflate_sessions",
    /// Memory of the compression contexts those sessions hold of their own
    /// (--deflate dedicated), by zlib's formula; shared contexts not counted.
    Gauge deflate_context_bytes as "deflate_context_bytes",
    /// TCP connections accepted since start.
    Counter accepted as "accepted_connections",
    /// Connections upgraded to WebSocket since start.
    Counter upgraded as "upgraded_connections",
    /// Complete messages received (after reassembly of fragments).
    Counter messages_in as "received_messages",
    /// Messages echoed.
    Counter messages_out as "sent_messages",
    /// Payload bytes received in complete messages.
    Counter bytes_in as "received_payload_bytes",
    /// Payload bytes echoed.
    Counter bytes_out as "sent_payload_bytes",
    /// Ping frames sent by the keep-alive timer.
    Counter keep_alive_pings as "keep_alive_pings",
    /// Connections closed because the client sent nothing within --client-timeout.
    Counter client_timeouts as "client_timeouts",
    /// WebSocket requests refused with 403 because of their Origin.
    Counter origins_refused as "origins_refused",
    /// Requests answered 400 or 426: malformed or incomplete upgrade requests.
    Counter bad_requests as "bad_requests",
    /// Errors returned by accept (EMFILE and the like).
    Counter accept_errors as "accept_errors",
    /// Connections refused with 503 because --max-connections were open.
    Counter refused as "refused_connections",
    /// Connections closed because output for them piled up (--max-pending-bytes).
    Counter overflows as "overflows",
    /// Hub connections open now on Server-Sent Events or long polling.
    Gauge open_fallback_connections as "open_fallback_connections",
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
    /// One per worker, then the transports thread's.
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
    /// The thread that serves the hub's Server-Sent Events and long-polling
    /// transports for every core.
    pub transports: Counts,
    /// Every worker's and the transports thread's.
    pub totals: Counts,
}

impl EngineStats {
    pub fn new(cores: Vec<Option<usize>>) -> Arc<Self> {
        let workers = (0..=cores.len()).map(|_| WorkerStats::default()).collect();
        Arc::new(EngineStats { workers, cores })
    }

    /// Worker `index`'s counters; the transports thread's one past the last.
    pub fn worker(&self, index: usize) -> &WorkerStats {
        &self.workers[index]
    }

    /// The index of the transports thread's counters.
    pub fn transports_index(&self) -> usize {
        self.cores.len()
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
        let transports = self.workers[self.cores.len()].snapshot();
        let mut totals = transports.clone();
        for w in &workers {
            totals.add(&w.counts);
        }
        Report {
            workers,
            transports,
            totals,
        }
    }
}

/// The engine process's own figures, read by the engine itself so that a
/// load generator on another host gets the server's CPU per message and
/// memory from `/stats` (at the start and the end of its window).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Process {
    pub pid: u32,
    /// CPU seconds in user space, all threads, since the process started
    /// (getrusage: microsecond resolution, not /proc's 10 ms ticks).
    pub cpu_user_secs: f64,
    /// CPU seconds in the kernel on the process's behalf.
    pub cpu_system_secs: f64,
    /// Resident memory now.
    pub resident_bytes: u64,
    /// When the engine started, seconds since the Unix epoch: tells one
    /// run of a server from the next between two samples.
    pub start_time_unix_secs: f64,
    /// The same instant, RFC 3339 in UTC.
    pub start_time: String,
}

impl Process {
    pub fn now(started: SystemTime) -> Process {
        // SAFETY: getrusage writes one rusage into the zeroed struct we own;
        // RUSAGE_SELF is always a valid target, so it cannot fail.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Process {
            pid: std::process::id(),
            cpu_user_secs: secs(usage.ru_utime),
            cpu_system_secs: secs(usage.ru_stime),
            resident_bytes: resident_bytes().unwrap_or(0),
            start_time_unix_secs: started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            start_time: humantime::format_rfc3339_millis(started).to_string(),
        }
    }
}

/// Resident pages × page size, from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some(pages * page)
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
        assert_eq!(report.workers.len(), 2);
        stats.worker(stats.transports_index()).messages_in.add(5);
        assert_eq!(stats.report().totals.messages_in, 12);
        assert_eq!(stats.report().transports.messages_in, 5);
    }

    #[test]
    fn the_process_figures_grow_with_work_done() {
        let started = SystemTime::now();
        let before = Process::now(started);
        // Spin until getrusage has seen 20 ms more of user time.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while Process::now(started).cpu_user_secs < before.cpu_user_secs + 0.02 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            assert!(spin.elapsed().as_secs() < 10, "user time did not grow");
        }
        let after = Process::now(started);
        assert_eq!(after.pid, std::process::id());
        assert!(after.resident_bytes > 1 << 20, "{after:?}");
        assert_eq!(after.start_time_unix_secs, before.start_time_unix_secs);
        assert!(after.start_time.ends_with('Z'), "{}", after.start_time);
    }
}

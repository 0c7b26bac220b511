//! What the engine's threads share: the configuration in force, the
//! counters, the connection limit, hub negotiation's tokens and the way to
//! the transports thread ([`Engine`]); and each worker's own context
//! ([`Worker`]). `runtime` makes them and starts the threads; the drivers,
//! the routes and the transports thread read them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::admission::{Admission, Admissions};
use crate::handover;
use crate::hub::{self, HubWorker};
use crate::options::{Backend, Options};
use crate::shutdown::Shutdown;
use crate::startup::Startup;
use crate::stats::{EngineStats, WorkerStats};

pub const COMMIT: &str = env!("RINGECHO_COMMIT");

/// What every worker shares, read-only: the configuration in force and the
/// counters (each worker writes only its own).
pub struct Engine {
    pub options: Options,
    pub listen: SocketAddr,
    pub backend: Backend,
    pub cores: Vec<Option<usize>>,
    pub stats: Arc<EngineStats>,
    /// Connection tokens handed out by hub negotiation.
    pub hub_tokens: hub::Tokens,
    /// The way to the thread serving the hub's fallback transports.
    pub transports: handover::Sender,
    /// --max-connections, resolved, and the connections open on all cores.
    pub admissions: Arc<Admissions>,
    /// Set once the engine stops; the io-uring backend's workers read it
    /// when their doorbell rings (the tokio backends watch a channel).
    pub stopping: AtomicBool,
    pub started: Instant,
    /// The same instant on the wall clock, for `/stats` and `/metrics`.
    pub started_at: SystemTime,
}

/// One worker's context, owned by its thread.
pub struct Worker {
    pub index: usize,
    pub backend: Backend,
    pub options: Arc<Options>,
    pub engine: Arc<Engine>,
    pub shutdown: Rc<Shutdown>,
    /// This core's hub connections and broadcast queues.
    pub hub: Rc<HubWorker>,
}

impl Worker {
    pub fn stats(&self) -> &WorkerStats {
        self.engine.stats.worker(self.index)
    }
}

impl Engine {
    /// Counts a new connection in, or says no when --max-connections is
    /// reached.
    pub fn admit(&self) -> Option<Admission> {
        self.admissions.admit()
    }

    /// The `/stats` document: per-worker counters, totals and the
    /// configuration in force.
    pub fn stats_json(&self) -> String {
        let report = self.stats.report();
        let mut config = serde_json::to_value(&self.options).expect("options serialize");
        config["listen"] = self.listen.to_string().into();
        config["backend_requested"] = config["backend"].take();
        config["backend"] = self.backend.name().into();
        config["threads"] = self.cores.len().into();
        config["pinned"] = self.cores.iter().all(Option::is_some).into();
        config["max_connections"] = self.admissions.max().into();
        serde_json::to_string_pretty(&serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": COMMIT,
            "backend": self.backend.name(),
            "listen": self.listen.to_string(),
            "uptime_secs": self.started.elapsed().as_secs_f64(),
            "process": crate::stats::Process::now(self.started_at),
            "config": config,
            "workers": report.workers,
            "transports": report.transports,
            "totals": report.totals,
        }))
        .expect("stats serialize")
    }

    /// The `/metrics` document: the same figures in Prometheus's format.
    pub fn metrics_text(&self) -> String {
        let about = crate::metrics::About {
            version: env!("CARGO_PKG_VERSION"),
            commit: COMMIT,
            backend: self.backend.name(),
        };
        crate::metrics::render(
            &about,
            &self.stats.report(),
            &crate::stats::Process::now(self.started_at),
        )
    }

    pub fn startup(&self) -> Startup {
        Startup {
            listen: self.listen,
            ws_path: self.options.ws_path.clone(),
            backend: self.backend.name().to_string(),
            threads: self.cores.len(),
            cores: self.cores.iter().copied().collect(),
            receive_buffer_size: self.options.receive_buffer_size,
        }
    }
}

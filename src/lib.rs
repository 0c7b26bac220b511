//! ringecho: a thread-per-core io_uring WebSocket echo engine.
//!
//! Data flows one way: [`runtime`] makes the [`engine`]'s shared state and
//! each core's worker, starts a worker per core and accepts;
//! [`connection`] (or the native ring's own HTTP phase) serves HTTP until
//! the upgrade, routed by [`routes`]; a backend's [`driver`] feeds the
//! sans-IO [`session`], which frames with [`codec`]; [`hub`] is the SignalR
//! protocol on a session, and [`transports`] its fallback transports, which
//! the workers reach through [`handover`]; [`admission`] holds
//! --max-connections; every layer counts in [`stats`]; [`options`] defines
//! and checks the configuration; [`bench`] measures the engine with loadgen.

pub mod admission;
pub mod bench;
pub mod codec;
pub mod connection;
pub mod deflate;
pub mod driver;
pub mod engine;
pub mod handover;
pub mod hub;
pub mod memory;
pub mod metrics;
pub mod options;
pub mod routes;
pub mod runtime;
pub mod session;
pub mod shutdown;
pub mod startup;
pub mod stats;
pub mod transports;

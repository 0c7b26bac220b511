//! ringecho: a thread-per-core io_uring WebSocket echo engine.
//!
//! Data flows one way: [`runtime`] starts a worker per core and accepts;
//! [`connection`] (or the native ring's own HTTP phase) serves HTTP until
//! the upgrade, routed by [`routes`]; a backend's [`driver`] feeds the
//! sans-IO [`session`], which frames with [`codec`]; [`hub`] is the SignalR
//! protocol on a session, and [`transports`] its fallback transports; every layer counts in
//! [`stats`]; [`options`] defines and checks the configuration; [`bench`]
//! measures the engine with loadgen.

pub mod bench;
pub mod codec;
pub mod connection;
pub mod deflate;
pub mod driver;
pub mod hub;
pub mod metrics;
pub mod options;
pub mod routes;
pub mod runtime;
pub mod session;
pub mod shutdown;
pub mod startup;
pub mod stats;
pub mod transports;

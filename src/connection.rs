//! A connection's HTTP phase on the tokio backends (epoll, tokio-uring):
//! hyper serves HTTP/1.1, answering from the engine's one routing table
//! ([`crate::routes`]), until a valid WebSocket upgrade; then the socket is
//! taken back and handed to the echo session on the worker's backend. The
//! io-uring backend parses requests on its own loop instead
//! ([`crate::driver::ring`]).
//!
//! hyper runs here on tokio's socket type (it needs AsyncRead/AsyncWrite);
//! this is the cold path. `without_shutdown` returns the socket and any bytes
//! read past the upgrade request, so nothing the client pipelined is lost.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::ready;
use std::rc::Rc;

use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::deflate::Agreed;
use crate::driver::uring::UringStream;
use crate::driver::Io;
use crate::hub::HubSession;
use crate::options::Backend;
use crate::routes::{self, Endpoint, Upgrade, MAX_HEADER_BYTES};
use crate::runtime::{Admission, Worker};
use crate::session::RawEcho;
use crate::shutdown::Listener;

/// Serves one accepted connection until it closes, on the accepting core.
pub async fn serve(stream: TcpStream, worker: Rc<Worker>) {
    let stats = worker.stats();
    stats.accepted.add(1);
    stats.open_connections.add(1);
    let _ = stream.set_nodelay(true);
    let Some(admission) = worker.engine.admit() else {
        stats.refused.add(1);
        refuse(stream, &worker).await;
        stats.open_connections.sub(1);
        return;
    };
    let upgraded = Rc::new(Cell::new(None));
    let service = {
        let worker = worker.clone();
        let upgraded = upgraded.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (parts, _body) = request.into_parts();
            let (reply, upgrade) = routes::respond(&worker, &parts);
            if upgrade.is_some() {
                upgraded.set(upgrade);
            }
            ready(Ok::<_, Infallible>(reply.map(Full::new)))
        })
    };
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(worker.options.handshake_timeout())
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .without_shutdown();
    let mut shutdown = worker.shutdown.listen();
    // A connection still in its HTTP phase at shutdown is simply closed.
    let parts = tokio::select! {
        parts = http => parts.ok(),
        () = &mut shutdown => None,
    };
    if let (Some(parts), Some(upgrade)) = (parts, upgraded.get()) {
        let stream = parts.io.into_inner();
        // What the client sent past the upgrade request (usually nothing),
        // copied out so that hyper's read buffer is freed now rather than
        // held for the life of the connection.
        let initial = parts.read_buf.to_vec();
        let phase = Phase {
            initial,
            worker,
            shutdown,
            _admission: admission,
        };
        // The WebSocket phase is a task of its own, sized for the session
        // alone: this one is sized for hyper's phase and ends here, so an
        // open WebSocket does not carry it. One task type per backend and
        // endpoint, too: a future is as large as its largest variant, and an
        // echo on the native ring is the smallest of them (1 KiB, against
        // 1.7 KiB for one future covering all six).
        let backend = phase.worker.backend;
        match backend {
            Backend::Epoll => phase.spawn(upgrade, stream),
            Backend::IoUring => unreachable!("the io-uring backend serves HTTP on its own loop"),
            Backend::TokioUring => match UringStream::from_tokio(stream) {
                Ok(stream) => phase.spawn(upgrade, stream),
                Err(e) => phase.abandon(e),
            },
        }
        return;
    }
    stats.open_connections.sub(1);
}

/// What the WebSocket phase of a connection takes over from its HTTP phase.
struct Phase {
    initial: Vec<u8>,
    worker: Rc<Worker>,
    shutdown: Listener,
    _admission: Admission,
}

impl Phase {
    /// Runs the WebSocket phase on `stream` as a task of its own, until the
    /// connection closes.
    fn spawn<S: Io + 'static>(self, upgrade: Upgrade, stream: S) {
        match upgrade.endpoint {
            Endpoint::Echo => tokio::task::spawn_local(self.echo(stream, upgrade.deflate)),
            Endpoint::Hub => tokio::task::spawn_local(self.hub(stream, upgrade.deflate)),
        };
    }

    /// The socket could not be moved to the backend: the connection ends.
    fn abandon(self, e: std::io::Error) {
        tracing::warn!("could not hand the socket to io_uring: {e}");
        self.worker.stats().open_connections.sub(1);
    }

    async fn echo<S: Io>(self, stream: S, deflate: Option<Agreed>) {
        let (options, stats) = (&self.worker.options, self.worker.stats());
        let echo = RawEcho {
            stats,
            keep_alive: options.keep_alive(),
        };
        let (initial, shutdown) = (&self.initial, self.shutdown);
        crate::driver::task::run(stream, initial, &echo, deflate, options, stats, shutdown).await;
        stats.open_connections.sub(1);
    }

    async fn hub<S: Io>(self, stream: S, deflate: Option<Agreed>) {
        let (options, stats) = (&self.worker.options, self.worker.stats());
        let hub = HubSession::new(
            self.worker.hub.clone(),
            stats,
            options.hub_keep_alive(),
            options.max_message_size,
            options.max_pending_bytes,
        );
        let (initial, shutdown) = (&self.initial, self.shutdown);
        crate::driver::task::run(stream, initial, &hub, deflate, options, stats, shutdown).await;
        stats.open_connections.sub(1);
    }
}

/// Answers 503 to whatever the client asks, then closes: the engine is at
/// --max-connections. hyper reads the request first, so the client sees the
/// answer rather than a reset.
async fn refuse(stream: TcpStream, worker: &Worker) {
    let service = hyper::service::service_fn(|_request| {
        ready(Ok::<_, Infallible>(routes::refusal().map(Full::new)))
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(worker.options.handshake_timeout())
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = http.await;
}

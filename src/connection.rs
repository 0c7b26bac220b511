//! A connection's HTTP phase on the tokio backends (epoll, tokio-uring):
//! hyper serves HTTP/1.1, answering from the engine's one routing table
//! ([`crate::routes`]), until a valid WebSocket upgrade; then the socket is
//! taken back and handed to the echo session on the worker's backend. The
//! io-uring backend parses requests on its own loop instead
//! ([`crate::driver::ring`]).
//!
//! hyper runs here on tokio's socket type (it needs AsyncRead/AsyncWrite);
//! this is the cold path. Requests of the hub's fallback transports are
//! forwarded to the transports thread ([`crate::transports`]), and its
//! answers streamed back. The transports thread serves the connections the
//! native ring hands it with this same code. `without_shutdown` returns the socket and any bytes
//! read past the upgrade request, so nothing the client pipelined is lost.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::ready;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::admission::Admission;
use crate::deflate::Agreed;
use crate::driver::uring::UringStream;
use crate::driver::Io;
use crate::engine::Worker;
use crate::handover::Body;
use crate::hub::HubSession;
use crate::options::Backend;
use crate::routes::{self, Endpoint, Routed, Upgrade, MAX_HEADER_BYTES};
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
    http_phase(Prefixed::new(stream, Vec::new()), Some(admission), worker).await;
}

/// Serves a connection the native ring handed to the transports thread,
/// from the request it was answering (`initial` holds it and what followed).
pub async fn serve_handed_over(
    stream: TcpStream,
    initial: Vec<u8>,
    admission: Option<Admission>,
    worker: Rc<Worker>,
) {
    worker.stats().open_connections.add(1);
    http_phase(Prefixed::new(stream, initial), admission, worker).await;
}

/// A request's body, read whole before it is forwarded: at most
/// --max-message-size bytes.
async fn read_body(
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<bytes::Bytes, hyper::Response<Body>> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(routes::text(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "request body larger than --max-message-size, or cut short\n",
        )
        .map(Body::full)),
    }
}

async fn http_phase(stream: Prefixed, admission: Option<Admission>, worker: Rc<Worker>) {
    let stats = worker.stats();
    let upgraded = Rc::new(Cell::new(None));
    let service = {
        let worker = worker.clone();
        let upgraded = upgraded.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let worker = worker.clone();
            let upgraded = upgraded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let response = match routes::respond(&worker, &parts) {
                    Routed::Reply(reply, upgrade) => {
                        if upgrade.is_some() {
                            upgraded.set(upgrade);
                        }
                        reply.map(Body::full)
                    }
                    Routed::Transport => {
                        match read_body(body, worker.options.max_message_size).await {
                            Ok(body) => worker.engine.transports.call(parts, body).await,
                            Err(refusal) => refusal,
                        }
                    }
                };
                Ok::<_, Infallible>(response)
            }
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
        let (stream, mut initial) = parts.io.into_inner().into_parts();
        // What the client sent past the upgrade request (usually nothing),
        // copied out so that hyper's read buffer is freed now rather than
        // held for the life of the connection.
        initial.extend_from_slice(&parts.read_buf);
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

/// A socket with bytes already read from it in front: what the native ring
/// had read of a connection it handed over. Empty for accepted connections.
pub struct Prefixed {
    stream: TcpStream,
    prefix: Vec<u8>,
    /// How much of `prefix` was read.
    taken: usize,
}

impl Prefixed {
    fn new(stream: TcpStream, prefix: Vec<u8>) -> Prefixed {
        Prefixed {
            stream,
            prefix,
            taken: 0,
        }
    }

    /// The socket, and what of the prefix was not read.
    fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        self.prefix.drain(..self.taken);
        (self.stream, self.prefix)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.prefix[this.taken..];
        if rest.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.taken += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What the WebSocket phase of a connection takes over from its HTTP phase.
struct Phase {
    initial: Vec<u8>,
    worker: Rc<Worker>,
    shutdown: Listener,
    _admission: Option<Admission>,
}

impl Phase {
    /// Runs the WebSocket phase on `stream` as a task of its own, until the
    /// connection closes.
    fn spawn<S: Io + 'static>(self, upgrade: Upgrade, stream: S) {
        match upgrade.endpoint {
            Endpoint::Echo => tokio::task::spawn_local(self.echo(stream, upgrade.deflate)),
            Endpoint::Hub => tokio::task::spawn_local(self.hub(stream, upgrade.deflate, false)),
            Endpoint::Broadcast => {
                tokio::task::spawn_local(self.hub(stream, upgrade.deflate, true))
            }
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

    /// A hub connection; `raw`: one of the raw broadcast endpoint.
    async fn hub<S: Io>(self, stream: S, deflate: Option<Agreed>, raw: bool) {
        let (options, stats) = (&self.worker.options, self.worker.stats());
        let hub = HubSession::configured(self.worker.hub.clone(), stats, options, raw);
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

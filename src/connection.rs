//! A connection's HTTP phase: hyper serves HTTP/1.1 until a valid WebSocket
//! upgrade, then the socket is taken back and handed to the echo session on
//! the worker's backend.
//!
//! hyper runs here on tokio's socket type (it needs AsyncRead/AsyncWrite);
//! this is the cold path. `without_shutdown` returns the socket and any bytes
//! read past the upgrade request, so nothing the client pipelined is lost.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::ready;
use std::rc::Rc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use crate::driver::ring::RingStream;
use crate::driver::uring::UringStream;
use crate::driver::Io;
use crate::hub::HubSession;
use crate::options::{Backend, Options};
use crate::runtime::{Admission, Worker};
use crate::session::{self, RawEcho};
use crate::shutdown::Listener;

type Reply = Response<Full<Bytes>>;

/// Which WebSocket endpoint a connection was upgraded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Echo,
    Hub,
}

/// The sample echo page and the live view, built into the binary.
const PAGE: &str = include_str!("page.html");
/// Request heads above this get 431 and never reach the echo code.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const DASHBOARD: &str = include_str!("dashboard.html");

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
        hyper::service::service_fn(move |request| {
            ready(Ok::<_, Infallible>(respond(&worker, &upgraded, request)))
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
    if let (Some(parts), Some(endpoint)) = (parts, upgraded.get()) {
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
            Backend::Epoll => phase.spawn(endpoint, stream),
            Backend::IoUring => {
                let ring = phase
                    .worker
                    .ring
                    .clone()
                    .expect("the io-uring backend's worker has a ring");
                match RingStream::from_tokio(stream, ring) {
                    Ok(stream) => phase.spawn(endpoint, stream),
                    Err(e) => phase.abandon(e),
                }
            }
            Backend::TokioUring => match UringStream::from_tokio(stream) {
                Ok(stream) => phase.spawn(endpoint, stream),
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
    fn spawn<S: Io + 'static>(self, endpoint: Endpoint, stream: S) {
        match endpoint {
            Endpoint::Echo => tokio::task::spawn_local(self.echo(stream)),
            Endpoint::Hub => tokio::task::spawn_local(self.hub(stream)),
        };
    }

    /// The socket could not be moved to the backend: the connection ends.
    fn abandon(self, e: std::io::Error) {
        tracing::warn!("could not hand the socket to io_uring: {e}");
        self.worker.stats().open_connections.sub(1);
    }

    async fn echo<S: Io>(self, stream: S) {
        let (options, stats) = (&self.worker.options, self.worker.stats());
        let echo = RawEcho {
            stats,
            keep_alive: options.keep_alive(),
        };
        session::run(stream, &self.initial, &echo, options, stats, self.shutdown).await;
        stats.open_connections.sub(1);
    }

    async fn hub<S: Io>(self, stream: S) {
        let (options, stats) = (&self.worker.options, self.worker.stats());
        let hub = HubSession::new(
            self.worker.hub.clone(),
            stats,
            options.hub_keep_alive(),
            options.max_message_size,
            options.max_pending_bytes,
        );
        session::run(stream, &self.initial, &hub, options, stats, self.shutdown).await;
        stats.open_connections.sub(1);
    }
}

/// Answers 503 to whatever the client asks, then closes: the engine is at
/// --max-connections. hyper reads the request first, so the client sees the
/// answer rather than a reset.
async fn refuse(stream: TcpStream, worker: &Worker) {
    let service = hyper::service::service_fn(|_request| {
        let mut reply = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections: try again later\n",
        );
        reply
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        ready(Ok::<_, Infallible>(reply))
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(worker.options.handshake_timeout())
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = http.await;
}

fn respond(
    worker: &Worker,
    upgraded: &Cell<Option<Endpoint>>,
    request: Request<Incoming>,
) -> Reply {
    let path = request.uri().path();
    let wants_websocket = header_has_token(request.headers(), header::UPGRADE, "websocket");
    let options = &worker.options;
    if let Some(rest) = path.strip_prefix(options.hub_path.as_str()) {
        if rest == "/negotiate" {
            if request.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "negotiate with POST\n");
            }
            let body = worker.engine.hub_tokens.negotiate();
            return with_type(StatusCode::OK, body.into(), "application/json");
        }
        if rest.is_empty() {
            if !wants_websocket {
                worker.stats().bad_requests.add(1);
                return text(
                    StatusCode::BAD_REQUEST,
                    "this is the SignalR hub endpoint: connect with a SignalR client (WebSockets transport)\n",
                );
            }
            // After negotiation the client comes back with its one-use token.
            let token = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("id=")));
            if let Some(token) = token {
                if !worker.engine.hub_tokens.redeem(token) {
                    return text(
                        StatusCode::NOT_FOUND,
                        "unknown or already used connection token\n",
                    );
                }
            }
            return handshake(worker, upgraded, &request, Endpoint::Hub);
        }
    }
    if path == options.ws_path || (path == "/" && wants_websocket) {
        if wants_websocket {
            return handshake(worker, upgraded, &request, Endpoint::Echo);
        }
        if path != "/" {
            worker.stats().bad_requests.add(1);
            return text(
                StatusCode::BAD_REQUEST,
                "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)\n",
            );
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match path {
        "/" => with_type(StatusCode::OK, PAGE.into(), "text/html; charset=utf-8"),
        "/dashboard" => with_type(StatusCode::OK, DASHBOARD.into(), "text/html; charset=utf-8"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/stats" => with_type(
            StatusCode::OK,
            worker.engine.stats_json().into(),
            "application/json",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Checks an upgrade request as RFC 6455 §4.2.1 asks, then the Origin.
fn handshake(
    worker: &Worker,
    upgraded: &Cell<Option<Endpoint>>,
    request: &Request<Incoming>,
    endpoint: Endpoint,
) -> Reply {
    let stats = worker.stats();
    match check_upgrade(
        request.method(),
        request.version(),
        request.headers(),
        &worker.options,
    ) {
        Ok(accept) => {
            upgraded.set(Some(endpoint));
            // No Sec-WebSocket-Extensions in the answer: permessage-deflate
            // offers (every Chromium makes one) are declined by leaving it out.
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_ACCEPT, accept)
                .body(Full::default())
                .expect("a valid response")
        }
        Err(Refusal::Origin) => {
            stats.origins_refused.add(1);
            text(StatusCode::FORBIDDEN, "origin not allowed\n")
        }
        Err(Refusal::Bad(status, why)) => {
            stats.bad_requests.add(1);
            let mut reply = text(status, &format!("{why}\n"));
            if status == StatusCode::UPGRADE_REQUIRED {
                reply.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            reply
        }
    }
}

/// Why an upgrade request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400 or 426, with a one-line reason.
    Bad(StatusCode, &'static str),
    /// 403: the Origin is not in --allowed-origin.
    Origin,
}

/// Checks an upgrade request as RFC 6455 §4.2.1 asks, then its Origin;
/// returns the Sec-WebSocket-Accept value for a request that may upgrade.
pub fn check_upgrade(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    options: &Options,
) -> Result<String, Refusal> {
    let bad = |status, why| Err(Refusal::Bad(status, why));
    if method != Method::GET {
        return bad(StatusCode::BAD_REQUEST, "a WebSocket upgrade must use GET");
    }
    if version != Version::HTTP_11 {
        return bad(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs HTTP/1.1",
        );
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return bad(StatusCode::BAD_REQUEST, "missing 'Connection: Upgrade'");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return bad(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
        );
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| is_valid_key(k.as_bytes()))
    else {
        return bad(
            StatusCode::BAD_REQUEST,
            "missing or malformed Sec-WebSocket-Key",
        );
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if !options.origin_allowed(origin) {
        return Err(Refusal::Origin);
    }
    Ok(accept_key(key.as_bytes()))
}

/// Sec-WebSocket-Accept: base64(SHA-1(key + the RFC's GUID)).
fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// A key must be the base64 of 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn text(status: StatusCode, body: &str) -> Reply {
    with_type(
        status,
        Bytes::copy_from_slice(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"c2hvcnQ="));
    }
}

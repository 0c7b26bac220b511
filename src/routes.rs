//! The engine's routes, one table for every backend: hyper's HTTP phase
//! (epoll, tokio-uring) and the native ring's own request parser both ask
//! [`respond`] what to answer, and whether the connection becomes a
//! WebSocket on which endpoint.

use std::cell::Cell;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use sha1::{Digest, Sha1};

use crate::deflate::{self, Agreed};
use crate::engine::Worker;
use crate::options::{Options, Transport};

/// An answer: status, headers and the whole body.
pub type Reply = Response<Bytes>;

/// Which WebSocket endpoint a connection was upgraded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Echo,
    Hub,
    /// Raw messages to every connection of the endpoint, on every core.
    Broadcast,
}

/// A connection that becomes a WebSocket once its 101 is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    pub endpoint: Endpoint,
    /// permessage-deflate, if an offer was accepted.
    pub deflate: Option<Agreed>,
}

/// The sample echo page and the live view, built into the binary.
const PAGE: &str = include_str!("page.html");
const DASHBOARD: &str = include_str!("dashboard.html");
/// Request heads above this get 431 and never reach the echo code.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The answer to every request while the engine is at --max-connections.
pub fn refusal() -> Reply {
    let mut reply = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections: try again later\n",
    );
    reply
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    reply
}

/// What a request head is routed to.
#[allow(clippy::large_enum_variant)]
pub enum Routed {
    /// This answer; and the endpoint the connection switches to if it is a
    /// valid upgrade.
    Reply(Reply, Option<Upgrade>),
    /// A request of the hub's fallback transports (Server-Sent Events, long
    /// polling): the transports thread answers it, body and all
    /// ([`crate::transports`]).
    Transport,
}

/// The routing table of every backend.
pub fn respond(worker: &Worker, request: &Parts) -> Routed {
    if is_transport_request(&worker.options, request) {
        return Routed::Transport;
    }
    let upgraded = Cell::new(None);
    let reply = route(worker, &upgraded, request);
    Routed::Reply(reply, upgraded.get())
}

/// A request at the hub's path that names its connection and is not a
/// WebSocket upgrade.
fn is_transport_request(options: &Options, request: &Parts) -> bool {
    request.uri.path() == options.hub_path
        && connection_token(request).is_some()
        && !header_has_token(&request.headers, header::UPGRADE, "websocket")
        && matches!(request.method, Method::GET | Method::POST | Method::DELETE)
}

/// The connection token a hub request names with `?id=`.
pub fn connection_token(request: &Parts) -> Option<&str> {
    request
        .uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("id="))
}

fn route(worker: &Worker, upgraded: &Cell<Option<Upgrade>>, request: &Parts) -> Reply {
    let path = request.uri.path();
    let wants_websocket = header_has_token(&request.headers, header::UPGRADE, "websocket");
    let options = &worker.options;
    if let Some(rest) = path.strip_prefix(options.hub_path.as_str()) {
        if rest == "/negotiate" {
            if request.method != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "negotiate with POST\n");
            }
            let body = worker.engine.hub_tokens.negotiate(&options.transports);
            return with_type(StatusCode::OK, body.into(), "application/json");
        }
        if rest.is_empty() {
            if !wants_websocket {
                worker.stats().bad_requests.add(1);
                return text(
                    StatusCode::BAD_REQUEST,
                    "this is the SignalR hub endpoint: connect with a SignalR client\n",
                );
            }
            if !options.offers(Transport::Websockets) {
                return text(
                    StatusCode::NOT_FOUND,
                    "the WebSockets transport is not offered here (--transports)\n",
                );
            }
            // After negotiation the client comes back with its one-use token.
            if let Some(token) = connection_token(request) {
                if !worker.engine.hub_tokens.redeem(token) {
                    return text(
                        StatusCode::NOT_FOUND,
                        "unknown or already used connection token\n",
                    );
                }
            }
            return handshake(worker, upgraded, request, Endpoint::Hub);
        }
    }
    if path == options.broadcast_path {
        if wants_websocket {
            return handshake(worker, upgraded, request, Endpoint::Broadcast);
        }
        worker.stats().bad_requests.add(1);
        return text(
            StatusCode::BAD_REQUEST,
            "this is the raw broadcast endpoint: connect with a WebSocket client (Upgrade: websocket)\n",
        );
    }
    if path == options.ws_path || (path == "/" && wants_websocket) {
        if wants_websocket {
            return handshake(worker, upgraded, request, Endpoint::Echo);
        }
        if path != "/" {
            worker.stats().bad_requests.add(1);
            return text(
                StatusCode::BAD_REQUEST,
                "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)\n",
            );
        }
    }
    if request.method != Method::GET && request.method != Method::HEAD {
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
        "/metrics" => with_type(
            StatusCode::OK,
            worker.engine.metrics_text().into(),
            crate::metrics::CONTENT_TYPE,
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Checks an upgrade request as RFC 6455 §4.2.1 asks, then the Origin.
fn handshake(
    worker: &Worker,
    upgraded: &Cell<Option<Upgrade>>,
    request: &Parts,
    endpoint: Endpoint,
) -> Reply {
    let stats = worker.stats();
    match check_upgrade(
        &request.method,
        request.version,
        &request.headers,
        &worker.options,
    ) {
        Ok(accept) => {
            // With --deflate off, or no acceptable offer, the answer has no
            // Sec-WebSocket-Extensions: the offers (every Chromium makes
            // one) are declined by leaving it out.
            let deflate = deflate::negotiate(&request.headers, worker.options.deflate);
            upgraded.set(Some(Upgrade {
                endpoint,
                deflate: deflate.as_ref().map(|(agreed, _)| *agreed),
            }));
            let mut reply = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_ACCEPT, accept);
            if let Some((_, answer)) = deflate {
                reply = reply.header(header::SEC_WEBSOCKET_EXTENSIONS, answer);
            }
            reply.body(Bytes::new()).expect("a valid response")
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

pub fn text(status: StatusCode, body: &str) -> Reply {
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
        .body(body)
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

//! The hub's fallback transports, client side, as the official client
//! speaks them: `POST {hub}/negotiate?negotiateVersion=1` for a connection
//! token, then messages to the server as POSTs to `{hub}?id=TOKEN`, and
//! messages from it on a Server-Sent Events stream (a GET with
//! `Accept: text/event-stream`) or on polls (GETs, the first answered at
//! once). Each direction has a keep-alive HTTP/1.1 connection of its own,
//! spoken with hyper.
//!
//! What arrives is handed to the same reader as a WebSocket's messages
//! ([`Messages`]): an event's data, or a poll's body, is one message.
//!
//! WebSocket hub connections negotiate here too ([`Negotiator`]), unless
//! told to skip it: the token then goes on the upgrade's `?id=`.

use std::io;
use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::client::{self, Incoming, Target};
use crate::hub::Hub;
use crate::options::{HubEncoding, HubTransport};

/// A source of server messages: a WebSocket's decoder, or a fallback
/// transport's stream or polls.
#[allow(async_fn_in_trait)] // static dispatch only, on one thread
pub trait Messages {
    /// The next message; `UnexpectedEof` once the server has ended the
    /// connection.
    async fn next(&mut self) -> io::Result<Incoming<'_>>;
}

impl<R: tokio::io::AsyncRead + Unpin> Messages for client::Decoder<R> {
    async fn next(&mut self) -> io::Result<Incoming<'_>> {
        client::Decoder::next(self).await
    }
}

/// Where a fallback connection's requests go.
#[derive(Clone)]
struct Url {
    target: Target,
    /// The hub's path, without the query.
    path: String,
    token: String,
}

impl Url {
    fn connection(&self) -> String {
        format!("{}?id={}", self.path, self.token)
    }
}

/// The sending side: POSTs on a connection of their own.
pub struct Poster {
    url: Url,
    http: SendRequest<Full<Bytes>>,
    transport: HubTransport,
    hub: Hub,
}

/// The receiving side: the event stream, or the polls.
pub struct Receiver {
    hub: Hub,
    kind: Kind,
    /// The data of the message lent out last.
    message: Vec<u8>,
}

enum Kind {
    Events {
        body: hyper::body::Incoming,
        /// Bytes of the stream not parsed into events yet.
        pending: Vec<u8>,
        /// How much of `pending` was searched for an event's end in vain.
        searched: usize,
    },
    Polls {
        url: Box<Url>,
        http: SendRequest<Full<Bytes>>,
    },
}

/// One HTTP/1.1 connection to the server (with TLS for wss://), driven by
/// a task of its own.
async fn http(target: &Target, source: Option<IpAddr>) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = client::open(target, source).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn request(
    target: &Target,
    method: hyper::Method,
    uri: &str,
    body: Bytes,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, &target.host);
    for header in &target.handshake.headers {
        if let Some((name, value)) = header.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    if let Some(origin) = &target.handshake.origin {
        builder = builder.header(hyper::header::ORIGIN, origin);
    }
    Ok(builder.body(Full::new(body))?)
}

/// The hub's path, without the query.
fn hub_path(target: &Target) -> String {
    target.path.split('?').next().unwrap_or("/").to_string()
}

/// One negotiation over `http`, as the official client's: a connection
/// token for `transport`, which the server must offer.
async fn negotiate(
    http: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    transport: HubTransport,
) -> anyhow::Result<String> {
    let negotiate = format!("{}/negotiate?negotiateVersion=1", hub_path(target));
    let answer = http
        .send_request(request(
            target,
            hyper::Method::POST,
            &negotiate,
            Bytes::new(),
        )?)
        .await?;
    let status = answer.status();
    let body = answer.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status == hyper::StatusCode::OK,
        "handshake refused: HTTP/1.1 {status} (negotiation)"
    );
    let negotiated: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("negotiation: the answer is not JSON: {e}"))?;
    let offered = negotiated["availableTransports"]
        .as_array()
        .is_some_and(|all| {
            all.iter()
                .any(|t| t["transport"] == transport.signalr_name())
        });
    anyhow::ensure!(
        offered,
        "negotiation: the server does not offer {} (it offered {})",
        transport.signalr_name(),
        negotiated["availableTransports"]
    );
    negotiated["connectionToken"]
        .as_str()
        .or_else(|| negotiated["connectionId"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("negotiation: the answer names no connection token"))
}

/// Negotiates WebSocket connections, one after another on one keep-alive
/// HTTP/1.1 connection (opened again when the server has closed it): each
/// token then goes on its connection's upgrade request as `?id=`, as the
/// official client does unless told skipNegotiation.
pub struct Negotiator {
    target: Target,
    source: Option<IpAddr>,
    http: Option<SendRequest<Full<Bytes>>>,
}

impl Negotiator {
    pub fn new(target: &Target, source: Option<IpAddr>) -> Self {
        Negotiator {
            target: target.clone(),
            source,
            http: None,
        }
    }

    /// A new token for a WebSocket connection.
    pub async fn token(&mut self) -> anyhow::Result<String> {
        // A keep-alive connection the server closed while idle fails the
        // next request before the server has seen it: open one again, once.
        for attempt in 0..2 {
            let http = match &mut self.http {
                Some(http) if !http.is_closed() => http,
                _ => self.http.insert(http(&self.target, self.source).await?),
            };
            match negotiate(http, &self.target, HubTransport::Websockets).await {
                Ok(token) => return Ok(token),
                Err(e) if attempt == 0 && e.downcast_ref::<hyper::Error>().is_some() => {
                    self.http = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// A [`Negotiator`] for a thread with no runtime of its own (the ring
/// client's, while it opens its connections): each token on a small
/// current-thread runtime, which also drives the HTTP connection.
pub struct BlockingNegotiator {
    runtime: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    negotiator: Negotiator,
}

impl BlockingNegotiator {
    pub fn new(target: &Target, source: Option<IpAddr>) -> io::Result<Self> {
        Ok(BlockingNegotiator {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            local: tokio::task::LocalSet::new(),
            negotiator: Negotiator::new(target, source),
        })
    }

    /// A new token for a WebSocket connection.
    pub fn token(&mut self) -> anyhow::Result<String> {
        self.local.block_on(&self.runtime, self.negotiator.token())
    }
}

/// Negotiates a connection on `transport`, opens its receiving side and
/// performs the hub handshake: both sides, ready for Echo invocations.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    transport: HubTransport,
    hub: Hub,
) -> anyhow::Result<(Poster, Receiver)> {
    let path = hub_path(target);
    let mut posts = http(target, source).await?;
    let token = negotiate(&mut posts, target, transport).await?;
    let url = Url {
        target: target.clone(),
        path,
        token,
    };
    let mut receiving = http(target, source).await?;
    let kind = match transport {
        HubTransport::Sse => {
            let mut open = request(target, hyper::Method::GET, &url.connection(), Bytes::new())?;
            open.headers_mut().insert(
                hyper::header::ACCEPT,
                hyper::header::HeaderValue::from_static("text/event-stream"),
            );
            let answer = receiving.send_request(open).await?;
            anyhow::ensure!(
                answer.status() == hyper::StatusCode::OK,
                "handshake refused: HTTP/1.1 {} (event stream)",
                answer.status()
            );
            Kind::Events {
                body: answer.into_body(),
                pending: Vec::new(),
                searched: 0,
            }
        }
        _ => {
            // The first poll opens the connection, answered at once.
            let first = request(target, hyper::Method::GET, &url.connection(), Bytes::new())?;
            let answer = receiving.send_request(first).await?;
            let status = answer.status();
            answer.into_body().collect().await?;
            anyhow::ensure!(
                status == hyper::StatusCode::OK,
                "handshake refused: HTTP/1.1 {status} (first poll)"
            );
            Kind::Polls {
                url: Box::new(url.clone()),
                http: receiving,
            }
        }
    };
    let mut poster = Poster {
        url,
        http: posts,
        transport,
        hub,
    };
    let mut receiver = Receiver {
        hub,
        kind,
        message: Vec::new(),
    };
    poster.send(Bytes::copy_from_slice(hub.handshake())).await?;
    let answer = receiver.receive().await?;
    let record = answer
        .split(|&b| b == crate::hub::RECORD_SEPARATOR)
        .next()
        .unwrap_or_default();
    anyhow::ensure!(
        record == b"{}" && answer.len() == 3,
        "hub handshake refused: {}",
        String::from_utf8_lossy(&answer)
    );
    Ok((poster, receiver))
}

impl Poster {
    /// Sends hub messages (whole records or MessagePack messages) in one
    /// POST, and waits for its 200.
    pub async fn send(&mut self, body: Bytes) -> io::Result<()> {
        let post = request(
            &self.url.target,
            hyper::Method::POST,
            &self.url.connection(),
            body,
        )
        .map_err(io::Error::other)?;
        let answer = self
            .http
            .send_request(post)
            .await
            .map_err(io::Error::other)?;
        let status = answer.status();
        answer
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?;
        if status != hyper::StatusCode::OK {
            return Err(io::Error::other(format!("a POST answered {status}")));
        }
        Ok(())
    }

    /// Ends the connection as the official client does: DELETE for long
    /// polling; a Close message for events (which have no DELETE).
    pub async fn close(&mut self) {
        let url = self.url.connection();
        let request = match self.transport {
            HubTransport::Longpolling => {
                request(&self.url.target, hyper::Method::DELETE, &url, Bytes::new())
            }
            _ => {
                let close = match self.hub.encoding {
                    HubEncoding::Json => &b"{\"type\":7}\x1e"[..],
                    HubEncoding::Messagepack => &[2, 0x91, 0x07][..],
                };
                let body = Bytes::from_static(close);
                request(&self.url.target, hyper::Method::POST, &url, body)
            }
        };
        if let Ok(request) = request {
            if let Ok(answer) = self.http.send_request(request).await {
                let _ = answer.into_body().collect().await;
            }
        }
    }
}

impl Receiver {
    /// The next message's data, owned.
    async fn receive(&mut self) -> io::Result<Vec<u8>> {
        self.fill().await?;
        Ok(std::mem::take(&mut self.message))
    }

    /// Waits for the next non-empty message into `self.message`.
    async fn fill(&mut self) -> io::Result<()> {
        self.message.clear();
        match &mut self.kind {
            Kind::Events {
                body,
                pending,
                searched,
            } => loop {
                if let Some(end) = event_end(pending, *searched) {
                    let data = event_data(&pending[..end], &mut self.message);
                    pending.drain(..end);
                    *searched = 0;
                    if data && !self.message.is_empty() {
                        return Ok(());
                    }
                    continue;
                }
                *searched = pending.len();
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            pending.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    None => return Err(io::ErrorKind::UnexpectedEof.into()),
                }
            },
            Kind::Polls { url, http } => loop {
                let poll = request(
                    &url.target,
                    hyper::Method::GET,
                    &url.connection(),
                    Bytes::new(),
                )
                .map_err(io::Error::other)?;
                let answer = http.send_request(poll).await.map_err(io::Error::other)?;
                let status = answer.status();
                // The body's pieces straight into the message: one copy.
                let mut body = answer.into_body();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                        self.message.extend_from_slice(&data);
                    }
                }
                match status {
                    // The connection has ended.
                    hyper::StatusCode::NO_CONTENT => {
                        return Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    hyper::StatusCode::OK if self.message.is_empty() => continue, // timed out
                    hyper::StatusCode::OK => return Ok(()),
                    other => return Err(io::Error::other(format!("a poll answered {other}"))),
                }
            },
        }
    }
}

impl Messages for Receiver {
    async fn next(&mut self) -> io::Result<Incoming<'_>> {
        self.fill().await?;
        Ok(match self.hub.encoding {
            HubEncoding::Json => Incoming::Text(&self.message),
            HubEncoding::Messagepack => Incoming::Binary(&self.message),
        })
    }
}

/// Where the first event in `stream` ends (past its blank line), if it has
/// all arrived; the first `searched` bytes were searched before (a large
/// event arrives in many pieces: each is searched once).
fn event_end(stream: &[u8], searched: usize) -> Option<usize> {
    // A blank line: "\n\n", or "\n\r\n" where lines end with CRLF. A
    // line end just before `searched` may start one.
    let from = searched.saturating_sub(2);
    memchr::memchr_iter(b'\n', &stream[from..]).find_map(|at| {
        let at = from + at;
        match stream.get(at + 1..) {
            Some([b'\n', ..]) => Some(at + 2),
            Some([b'\r', b'\n', ..]) => Some(at + 3),
            _ => None,
        }
    })
}

/// Appends an event's data to `out` (its `data:` lines, joined by
/// newlines); false for an event without data (a comment).
fn event_data(event: &[u8], out: &mut Vec<u8>) -> bool {
    let mut any = false;
    let mut rest = event;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        if any {
            out.push(b'\n');
        }
        out.extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_and_their_data_lines_join() {
        let stream = b":\r\n\r\ndata: {}\x1e\r\n\r\ndata: a\ndata: b\n\ndata: partial";
        let first = event_end(stream, 0).unwrap();
        assert_eq!(&stream[..first], b":\r\n\r\n");
        let mut out = Vec::new();
        assert!(!event_data(&stream[..first], &mut out));
        let rest = &stream[first..];
        let second = event_end(rest, 0).unwrap();
        assert!(event_data(&rest[..second], &mut out));
        assert_eq!(out, b"{}\x1e");
        let rest = &rest[second..];
        let third = event_end(rest, 0).unwrap();
        out.clear();
        assert!(event_data(&rest[..third], &mut out));
        assert_eq!(out, b"a\nb");
        assert_eq!(event_end(&rest[third..], 0), None);
    }

    #[test]
    fn an_event_arriving_in_pieces_ends_where_its_blank_line_completes() {
        for stream in [&b"data: abc\n\nnext"[..], b"data: abc\r\n\r\nnext"] {
            let end = stream.len() - 4;
            // Every split into two pieces, the first searched in vain.
            for cut in 0..end {
                assert_eq!(event_end(&stream[..cut], 0), None, "{cut}");
                assert_eq!(event_end(stream, cut), Some(end), "{cut}");
            }
        }
    }
}

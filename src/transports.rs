//! The hub's fallback transports, Server-Sent Events and long polling, as
//! SignalR's transport specification has them: after negotiation, the
//! client names its connection by its token (`?id=`) on every request:
//!
//! - `GET` with `Accept: text/event-stream` opens the event stream: the
//!   server's messages arrive as `data:` events (text only, so JSON only);
//! - `GET` otherwise is a poll: the first answers at once (200, empty) and
//!   opens the connection; later ones are held until there are messages
//!   (200 with them), --poll-timeout passes (200, empty) or the connection
//!   ends (204);
//! - `POST` carries the client's messages (the handshake first), answered
//!   200 at once: what they produce goes out on the stream or the next poll;
//! - `DELETE` ends the connection (202).
//!
//! A WebSocket lives on the core that accepted it, but these requests
//! arrive on separate TCP connections, which SO_REUSEPORT spreads across
//! cores. So every fallback hub connection lives on one thread, the
//! transports thread, which holds their sessions ([`HubSession`], the same
//! protocol code as over WebSockets) and takes part in broadcasts like a
//! worker. The tokio backends' workers forward these requests to it and
//! stream its answers back; the native ring hands the whole TCP connection
//! over to it instead (it serves it with hyper from then on, as the epoll
//! backend would).
//!
//! This is the cold path the article means by "fallback": one thread serves
//! every fallback connection, so their throughput does not grow with cores.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec;
use crate::engine::Worker;
use crate::handover::{Body, Handoff, Receiver, Request, Stream};
use crate::hub::{Broadcast, Encoding, HubSession};
use crate::options::Transport;
use crate::routes;
use crate::session::Handler as _;

/// How often held polls, idle long-polling connections, event streams whose
/// client went away, and keep-alive pings are checked.
const TICK: Duration = Duration::from_millis(250);

fn reply(reply: routes::Reply) -> Response<Body> {
    reply.map(Body::full)
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Full(None));
    *response.status_mut() = status;
    response
}

/// Serves the fallback transports until the engine stops: the handed-over
/// TCP connections, the forwarded requests and the broadcasts for the
/// connections it holds. Runs on the transports thread, inside a LocalSet.
pub async fn serve(
    worker: Rc<Worker>,
    receiver: Receiver,
    broadcasts: mpsc::UnboundedReceiver<Broadcast>,
    stopped: watch::Receiver<bool>,
) {
    let Receiver {
        requests,
        mut handoffs,
    } = receiver;
    let serving = worker.clone();
    tokio::task::spawn_local(async move {
        while let Some(handoff) = handoffs.recv().await {
            let Handoff {
                stream,
                initial,
                admission,
            } = handoff;
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream));
            match stream {
                Ok(stream) => {
                    let connection = crate::connection::serve_handed_over(
                        stream,
                        initial,
                        admission,
                        serving.clone(),
                    );
                    tokio::task::spawn_local(connection);
                }
                Err(e) => tracing::warn!("a connection handed to the transports thread: {e}"),
            }
        }
    });
    let mut fallback = Fallback {
        worker: &worker,
        connections: HashMap::new(),
    };
    fallback.run(requests, broadcasts, stopped).await;
    drop(fallback);
    worker.shutdown.fire();
    let deadline = Instant::now() + worker.options.shutdown_timeout();
    while worker.stats().open_connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The fallback hub connections, by token.
struct Fallback<'w> {
    worker: &'w Worker,
    connections: HashMap<String, Connection<'w>>,
}

/// One hub connection on a fallback transport.
struct Connection<'w> {
    session: HubSession<'w>,
    kind: Kind,
    /// Payloads waiting for a poll (long polling only).
    queued: Vec<u8>,
    /// The session ended: what is queued goes out, then the connection.
    ended: bool,
    /// The last time something was sent to the client (keep-alive pings).
    last_sent: Instant,
}

enum Kind {
    Events {
        chunks: mpsc::UnboundedSender<Bytes>,
        pending: Arc<AtomicU64>,
    },
    Polling {
        /// The poll being held, and when it is answered empty.
        held: Option<(oneshot::Sender<Response<Body>>, Instant)>,
        /// Since when no poll has been held: past --disconnect-timeout the
        /// connection is closed.
        idle_since: Instant,
    },
}

impl<'w> Fallback<'w> {
    async fn run(
        &mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut broadcasts: mpsc::UnboundedReceiver<Broadcast>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request { parts, body, reply }) => {
                        let answer = self.answer(&parts, &body);
                        if let Some(answer) = answer {
                            let _ = reply.send(answer);
                        } else {
                            self.hold(&parts, reply);
                        }
                    }
                    None => break,
                },
                frame = broadcasts.recv() => match frame {
                    Some(frame) => {
                        self.worker.hub.deliver_one(&frame);
                        let tokens: Vec<String> = self.connections.keys().cloned().collect();
                        for token in tokens {
                            self.flush(&token);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.on_tick(Instant::now()),
                _ = stopped.changed() => break,
            }
        }
        let tokens: Vec<String> = self.connections.keys().cloned().collect();
        for token in tokens {
            self.close(&token, 1001);
        }
    }

    /// The answer to a request, or None for a poll to hold.
    fn answer(&mut self, parts: &Parts, body: &[u8]) -> Option<Response<Body>> {
        let Some(token) = routes::connection_token(parts) else {
            return Some(reply(routes::text(
                StatusCode::BAD_REQUEST,
                "a transport request names its connection: ?id=TOKEN\n",
            )));
        };
        let token = token.to_string();
        let not_found = || {
            Some(reply(routes::text(
                StatusCode::NOT_FOUND,
                "no such hub connection: negotiate first, with POST to the hub's /negotiate\n",
            )))
        };
        let options = &self.worker.options;
        match parts.method {
            Method::GET if wants_events(parts) => {
                if !options.offers(Transport::ServerSentEvents) {
                    return not_found();
                }
                if self.connections.contains_key(&token) {
                    return Some(reply(routes::text(
                        StatusCode::CONFLICT,
                        "this connection already has its event stream or polls\n",
                    )));
                }
                if !self.worker.engine.hub_tokens.redeem(&token) {
                    return not_found();
                }
                let (chunks, rx) = mpsc::unbounded_channel();
                let pending = Arc::new(AtomicU64::new(0));
                // A comment first: some clients wait for a first byte before
                // they call the stream open.
                let opening = Bytes::from_static(b":\r\n");
                pending.fetch_add(opening.len() as u64, Ordering::Relaxed);
                let _ = chunks.send(opening);
                let stream = Stream {
                    chunks: rx,
                    pending: pending.clone(),
                };
                self.open(token, Kind::Events { chunks, pending });
                let mut response = Response::new(Body::Stream(stream));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                Some(response)
            }
            Method::GET => {
                if !options.offers(Transport::LongPolling) {
                    return not_found();
                }
                match self.connections.get(&token) {
                    Some(Connection {
                        kind: Kind::Polling { .. },
                        ..
                    }) => None,
                    Some(_) => Some(reply(routes::text(
                        StatusCode::CONFLICT,
                        "this connection has an event stream: it does not poll\n",
                    ))),
                    None if self.worker.engine.hub_tokens.redeem(&token) => {
                        // The first poll opens the connection and answers at once.
                        let now = Instant::now();
                        let kind = Kind::Polling {
                            held: None,
                            idle_since: now,
                        };
                        self.open(token, kind);
                        Some(status(StatusCode::OK))
                    }
                    None => not_found(),
                }
            }
            Method::POST => {
                let Some(connection) = self.connections.get_mut(&token) else {
                    return not_found();
                };
                Some(match connection.receive(body) {
                    Ok(()) => {
                        self.flush(&token);
                        status(StatusCode::OK)
                    }
                    Err((code, why)) => {
                        self.flush(&token);
                        reply(routes::text(code, why))
                    }
                })
            }
            Method::DELETE => {
                if !self.connections.contains_key(&token) {
                    return not_found();
                }
                self.close(&token, 1000);
                Some(status(StatusCode::ACCEPTED))
            }
            _ => Some(reply(routes::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "a transport request is a GET, POST or DELETE\n",
            ))),
        }
    }

    fn open(&mut self, token: String, kind: Kind) {
        let worker = self.worker;
        let options = &worker.options;
        let stats = worker.stats();
        stats.open_fallback_connections.add(1);
        let session = HubSession::configured(worker.hub.clone(), stats, options, false);
        let connection = Connection {
            session,
            kind,
            queued: Vec::new(),
            ended: false,
            last_sent: Instant::now(),
        };
        self.connections.insert(token, connection);
    }

    /// Holds a poll until there is something to answer it with.
    fn hold(&mut self, parts: &Parts, answer: oneshot::Sender<Response<Body>>) {
        let token = routes::connection_token(parts)
            .unwrap_or_default()
            .to_string();
        let timeout = self.worker.options.poll_timeout();
        let Some(connection) = self.connections.get_mut(&token) else {
            let _ = answer.send(status(StatusCode::NO_CONTENT));
            return;
        };
        let Kind::Polling { held, .. } = &mut connection.kind else {
            return;
        };
        // A newer poll replaces one still held, which is answered empty.
        if let Some((older, _)) = held.replace((answer, Instant::now() + timeout)) {
            let _ = older.send(status(StatusCode::OK));
        }
        self.flush(&token);
    }

    /// Sends what the connection has for its client, if its transport can
    /// take it now; once it has ended and all is sent, it goes.
    fn flush(&mut self, token: &str) {
        let Some(connection) = self.connections.get_mut(token) else {
            return;
        };
        let limit = self.worker.options.max_pending_bytes;
        let mut overflowed = false;
        while let Some(pushed) = connection.session.take_pushed() {
            match pushed {
                Ok(frame) => connection.push(codec::server_payload(&frame)),
                Err(_) => {
                    overflowed = true;
                    break;
                }
            }
        }
        overflowed |= connection.queued.len() as u64 > limit;
        let now = Instant::now();
        let finished = match &mut connection.kind {
            Kind::Events { chunks, pending } => {
                if !connection.queued.is_empty() {
                    let event = event(&connection.queued);
                    connection.queued.clear();
                    let size = event.len() as u64;
                    overflowed |= pending.fetch_add(size, Ordering::Relaxed) + size > limit;
                    connection.last_sent = now;
                    if chunks.send(event.into()).is_err() {
                        connection.ended = true;
                    }
                }
                connection.ended
            }
            Kind::Polling { held, idle_since } => {
                let ready = !connection.queued.is_empty() || connection.ended;
                match held.take_if(|_| ready) {
                    // Ended, and all was sent: this poll hears so (204).
                    Some((answer, _)) if connection.queued.is_empty() => {
                        let _ = answer.send(status(StatusCode::NO_CONTENT));
                        true
                    }
                    Some((answer, _)) => {
                        let body = Bytes::from(std::mem::take(&mut connection.queued));
                        let mut response = Response::new(Body::full(body));
                        let kind = match connection.session.encoding() {
                            Encoding::Json => "text/plain; charset=utf-8",
                            Encoding::MessagePack => "application/octet-stream",
                        };
                        response
                            .headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
                        let _ = answer.send(response);
                        connection.last_sent = now;
                        *idle_since = now;
                        false
                    }
                    None => false,
                }
            }
        };
        if overflowed {
            self.worker.stats().overflows.add(1);
            self.close(token, 1008);
        } else if finished {
            self.close(token, 1000);
        }
    }

    /// Ends a connection now: a held poll gets 204, an event stream ends.
    /// `code` is the close code it is counted under, as a WebSocket's.
    fn close(&mut self, token: &str, code: u16) {
        let Some(mut connection) = self.connections.remove(token) else {
            return;
        };
        if let Kind::Polling {
            held: Some((answer, _)),
            ..
        } = std::mem::replace(
            &mut connection.kind,
            Kind::Polling {
                held: None,
                idle_since: Instant::now(),
            },
        ) {
            let _ = answer.send(status(StatusCode::NO_CONTENT));
        }
        let stats = self.worker.stats();
        stats.open_fallback_connections.sub(1);
        stats.count_close(code);
    }

    fn on_tick(&mut self, now: Instant) {
        let options = &self.worker.options;
        let disconnect = options.disconnect_timeout();
        let keep_alive = options.hub_keep_alive();
        let (mut ended, mut gone, mut pinged) = (Vec::new(), Vec::new(), Vec::new());
        for (token, connection) in &mut self.connections {
            match &mut connection.kind {
                // A client ends an event stream by closing it: SSE has no
                // DELETE, and the official client's Close message races
                // its EventSource's close (it does not wait for that POST).
                Kind::Events { chunks, .. } if chunks.is_closed() => ended.push(token.clone()),
                // Events have no keep-alive of their own: the hub pings.
                // No Ping before the handshake's answer: the client expects
                // that answer first.
                Kind::Events { .. } => {
                    let due = keep_alive.is_some_and(|every| now - connection.last_sent >= every);
                    if due && connection.session.handshaken() {
                        let ping = connection.session.keep_alive_frame();
                        connection.push(codec::server_payload(&ping));
                        pinged.push(token.clone());
                    }
                }
                Kind::Polling { held, idle_since } => match held {
                    Some((answer, deadline)) if answer.is_closed() || now >= *deadline => {
                        let (answer, _) = held.take().expect("a held poll");
                        let _ = answer.send(status(StatusCode::OK));
                        *idle_since = now;
                    }
                    Some(_) => {}
                    // A client whose poll never came back.
                    None if now - *idle_since >= disconnect => gone.push(token.clone()),
                    None => {}
                },
            }
        }
        for token in ended {
            self.close(&token, 1000);
        }
        for token in gone {
            self.close(&token, 1006);
        }
        for token in pinged {
            self.flush(&token);
        }
    }
}

impl Connection<'_> {
    /// Handles a POST's messages; the error is the answer when the
    /// connection cannot take them.
    fn receive(&mut self, body: &[u8]) -> Result<(), (StatusCode, &'static str)> {
        if self.ended {
            return Err((StatusCode::NOT_FOUND, "this hub connection has ended\n"));
        }
        let mut out = Vec::new();
        let outcome = self.session.on_transport_data(body, &mut out);
        self.push(&out);
        if matches!(self.kind, Kind::Events { .. })
            && self.session.encoding() == Encoding::MessagePack
        {
            // Events are text: MessagePack cannot travel on them.
            self.ended = true;
            return Err((
                StatusCode::BAD_REQUEST,
                "Server-Sent Events carry text only: use the json protocol, or long polling\n",
            ));
        }
        if let Err(violation) = outcome {
            tracing::debug!("a fallback hub connection ends: {violation:?}");
            self.ended = true;
        }
        Ok(())
    }

    fn push(&mut self, payload: &[u8]) {
        self.queued.extend_from_slice(payload);
    }
}

/// Whether a GET asks for the event stream.
fn wants_events(parts: &Parts) -> bool {
    parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

/// One Server-Sent Event carrying `payload`: a `data:` line per line of it.
fn event(payload: &[u8]) -> Vec<u8> {
    let mut event = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        event.extend_from_slice(b"\r\n");
    }
    event.extend_from_slice(b"\r\n");
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_a_data_line_per_line() {
        assert_eq!(event(b"{}\x1e"), b"data: {}\x1e\r\n\r\n");
        assert_eq!(
            event(b"a\nb\r\nc"),
            b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"
        );
    }
}

//! The SignalR hub protocol, as the official client speaks it, in both its
//! encodings: JSON and MessagePack ([`msgpack`]).
//!
//! A hub connection is a session whose [`Handler`] is [`HubSession`], over a
//! WebSocket or, through [`crate::transports`], over Server-Sent Events or
//! long polling:
//! first the handshake, a JSON text record ended by 0x1E, which names the
//! encoding; then messages: JSON text records ended by 0x1E (several may
//! share a frame, one may span frames), or MessagePack messages behind
//! VarInt lengths in binary frames. `Echo(x)` answers with a
//! Completion holding x, copied as raw JSON (never re-serialized);
//! JSON goes through serde_json, with arguments borrowed as raw JSON:
//! benches/hub_json.rs measured it against sonic-rs and simd-json for an
//! Echo; serde_json is fastest at small sizes and the JSON crate is a minor
//! part of the engine's cost at every size (README, "Hub protocol").
//! `SendToAll(x)` delivers `Receive(x)` to every hub connection on every core
//! through per-core queues: the sender's core puts the frame on each worker's
//! channel, and each worker hands it to its own connections' mailboxes.
//!
//! Negotiation (`POST /hub/negotiate`) hands out one-use connection tokens;
//! they live in one map shared by all cores, touched only when a connection
//! starts. Besides WebSockets it offers the fallback transports, Server-Sent
//! Events and long polling, which [`crate::transports`] serves with the same
//! sessions.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fastwebsockets::OpCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use slab::Slab;
use smallvec::SmallVec;
use tokio::sync::{mpsc, Notify};

use crate::codec::{self, Violation};
use crate::options::{Options, Transport};
use crate::session::Handler;
use crate::session::Out;
use crate::stats::WorkerStats;

/// Ends every hub record.
pub const RECORD_SEPARATOR: u8 = 0x1E;
/// Negotiated tokens not used within this time are forgotten.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

pub mod msgpack;

/// A message for every hub connection, shared by the cores it is sent to:
/// its frame in each encoding, made once by the sender.
pub type Broadcast = Arc<Frames>;

/// One hub message as a server frame in each encoding; or, from the raw
/// broadcast endpoint, one raw message for that endpoint's connections (an
/// empty frame is for nobody).
#[derive(Default)]
pub struct Frames {
    pub json: Vec<u8>,
    pub messagepack: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Frames {
    fn of(&self, mailbox: &Mailbox) -> &[u8] {
        if mailbox.raw {
            return &self.raw;
        }
        match mailbox.encoding.get() {
            Encoding::Json => &self.json,
            Encoding::MessagePack => &self.messagepack,
        }
    }
}

/// A hub connection's encoding, named in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Json,
    MessagePack,
}

/// Negotiated connection tokens, shared by all cores (cold path only).
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, Instant>>);

impl Tokens {
    /// The body of a negotiate response offering `transports`, with a new
    /// token remembered.
    pub fn negotiate(&self, transports: &[Transport]) -> String {
        let token = random_id();
        let connection_id = random_id();
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.retain(|_, issued| now.duration_since(*issued) < TOKEN_LIFETIME);
        tokens.insert(token.clone(), now);
        serde_json::json!({
            "negotiateVersion": 1,
            "connectionId": connection_id,
            "connectionToken": token,
            "availableTransports": transports.iter().map(|&transport| {
                // Events are text; the others carry MessagePack too.
                let formats = match transport {
                    Transport::ServerSentEvents => &["Text"][..],
                    _ => &["Text", "Binary"][..],
                };
                serde_json::json!({
                    "transport": transport.signalr_name(),
                    "transferFormats": formats,
                })
            }).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Whether `token` was handed out and not used yet; it is used now.
    pub fn redeem(&self, token: &str) -> bool {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .remove(token)
            .is_some_and(|issued| issued.elapsed() < TOKEN_LIFETIME)
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One worker's end for senders: its broadcast channel, and on the native
/// ring the doorbell that wakes its loop (tokio's workers wake on the
/// channel itself).
#[derive(Clone)]
pub struct Inbox {
    pub channel: mpsc::UnboundedSender<Broadcast>,
    pub doorbell: Option<Arc<uring_loop::Doorbell>>,
}

/// The hub connections of one worker, and its end of the broadcast channels.
pub struct HubWorker {
    mailboxes: RefCell<Slab<Rc<Mailbox>>>,
    /// Every worker's inbox, this one's included.
    inboxes: Vec<Inbox>,
}

/// Frames waiting to be sent on one hub connection.
#[derive(Default)]
struct Mailbox {
    frames: RefCell<VecDeque<Broadcast>>,
    /// Which of a broadcast's frames this connection takes: the raw one on
    /// the raw broadcast endpoint, else the one in its encoding.
    encoding: Cell<Encoding>,
    raw: bool,
    /// Whether broadcasts reach this connection: a hub connection joins
    /// once its handshake is answered, as ASP.NET Core's do (before it, the
    /// client expects the handshake's answer first and no encoding is
    /// known); a raw one at once.
    joined: Cell<bool>,
    /// Bytes in `frames`, against --max-pending-bytes.
    bytes: Cell<u64>,
    /// Set when a frame did not fit: the connection closes with 1008.
    overflowed: Cell<bool>,
    limit: u64,
    arrived: Notify,
}

impl HubWorker {
    pub fn new(inboxes: Vec<Inbox>) -> Rc<Self> {
        Rc::new(HubWorker {
            mailboxes: RefCell::new(Slab::new()),
            inboxes,
        })
    }

    /// Hands each frame from this worker's channel to its hub connections.
    pub async fn deliver(self: Rc<Self>, mut channel: mpsc::UnboundedReceiver<Broadcast>) {
        while let Some(frame) = channel.recv().await {
            self.deliver_one(&frame);
        }
    }

    /// Puts one frame in every hub connection's mailbox of this worker.
    pub fn deliver_one(&self, frame: &Broadcast) {
        for (_, mailbox) in self.mailboxes.borrow().iter() {
            if !mailbox.joined.get() {
                continue;
            }
            let len = frame.of(mailbox).len();
            if len == 0 {
                // Not expressible in this connection's encoding.
                continue;
            }
            let bytes = mailbox.bytes.get() + len as u64;
            if bytes > mailbox.limit {
                mailbox.overflowed.set(true);
            } else {
                mailbox.bytes.set(bytes);
                mailbox.frames.borrow_mut().push_back(frame.clone());
            }
            mailbox.arrived.notify_one();
        }
    }

    fn broadcast(&self, frames: Frames) {
        let frame = Arc::new(frames);
        for inbox in &self.inboxes {
            let _ = inbox.channel.send(frame.clone());
            if let Some(doorbell) = &inbox.doorbell {
                doorbell.ring();
            }
        }
    }
}

#[derive(Deserialize)]
struct Handshake<'a> {
    #[serde(borrow)]
    protocol: Cow<'a, str>,
    version: u32,
}

/// The fields of hub messages the engine reads; others are ignored.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow, default)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "invocationId")]
    invocation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Vec<&'a RawValue>>,
}

/// One hub connection's protocol state.
pub struct HubSession<'a> {
    worker: Rc<HubWorker>,
    key: usize,
    mailbox: Rc<Mailbox>,
    stats: &'a WorkerStats,
    keep_alive: Option<Duration>,
    max_message: usize,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    handshaken: bool,
    encoding: Encoding,
    /// The start of a record (or MessagePack message) that has not all
    /// arrived yet.
    partial: Vec<u8>,
}

/// An argument as it arrived, in its connection's encoding: copied into
/// answers as is.
#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    Json(&'a str),
    Packed(&'a [u8]),
}

/// A hub message read from either encoding: what the routing needs.
struct Call<'a> {
    kind: u8,
    invocation_id: Option<&'a str>,
    target: Option<&'a str>,
    arguments: SmallVec<[Arg<'a>; 2]>,
}

impl<'a> HubSession<'a> {
    pub fn new(
        worker: Rc<HubWorker>,
        stats: &'a WorkerStats,
        keep_alive: Option<Duration>,
        max_message: usize,
        max_pending: u64,
    ) -> Self {
        Self::with_mailbox(worker, stats, keep_alive, max_message, max_pending, false)
    }

    /// A session as the engine's options configure it. `raw`: a
    /// connection of the raw broadcast endpoint, whose every message goes,
    /// as it is, to every connection of that endpoint on every core, itself
    /// included, through the hub's per-core queues, with no answer of its
    /// own (what a broadcast costs without the hub protocol); it keeps alive
    /// with WebSocket pings, as the echo does, not hub Pings.
    pub fn configured(
        worker: Rc<HubWorker>,
        stats: &'a WorkerStats,
        options: &Options,
        raw: bool,
    ) -> Self {
        let keep_alive = match raw {
            false => options.hub_keep_alive(),
            true => options.keep_alive(),
        };
        let (max_message, max_pending) = (options.max_message_size, options.max_pending_bytes);
        Self::with_mailbox(worker, stats, keep_alive, max_message, max_pending, raw)
    }

    fn with_mailbox(
        worker: Rc<HubWorker>,
        stats: &'a WorkerStats,
        keep_alive: Option<Duration>,
        max_message: usize,
        max_pending: u64,
        raw: bool,
    ) -> Self {
        let mailbox = Rc::new(Mailbox {
            limit: max_pending,
            raw,
            joined: Cell::new(raw),
            ..Mailbox::default()
        });
        let key = worker.mailboxes.borrow_mut().insert(mailbox.clone());
        HubSession {
            worker,
            key,
            mailbox,
            stats,
            keep_alive,
            max_message,
            state: RefCell::new(State::default()),
        }
    }

    /// Handles the bytes of one WebSocket message: the handshake, then
    /// complete messages, answered in one frame; an incomplete tail waits
    /// for the next.
    fn on_data(&self, data: &[u8], out: &mut Vec<Out>) -> Result<(), Violation> {
        let mut state = self.state.borrow_mut();
        let joined;
        let mut data = if state.partial.is_empty() {
            data
        } else {
            state.partial.extend_from_slice(data);
            joined = std::mem::take(&mut state.partial);
            &joined[..]
        };
        let mut handshake_answer = None;
        if !state.handshaken {
            let Some(end) = memchr::memchr(RECORD_SEPARATOR, data) else {
                return self.keep_tail(&mut state, data, Replies::new(Encoding::Json), out);
            };
            // The handshake is JSON, and so is its answer, in either encoding.
            let mut replies = Replies::with_capacity(Encoding::Json, data.len());
            let outcome = on_handshake(&data[..end], &mut replies);
            state.handshaken = true;
            match outcome {
                // JSON records after it answer in the same frame.
                Ok(Encoding::Json) => {
                    handshake_answer = Some(replies);
                    self.mailbox.joined.set(true);
                }
                Ok(encoding) => {
                    out.extend(replies.into_frame());
                    state.encoding = encoding;
                    self.mailbox.encoding.set(encoding);
                    self.mailbox.joined.set(true);
                }
                Err(violation) => {
                    out.extend(replies.into_frame());
                    return Err(violation);
                }
            }
            data = &data[end + 1..];
        }
        let mut replies =
            handshake_answer.unwrap_or_else(|| Replies::with_capacity(state.encoding, data.len()));
        let (used, outcome) = match state.encoding {
            Encoding::Json => self.json_records(data, &mut replies),
            Encoding::MessagePack => self.packed_messages(data, &mut replies),
        };
        match outcome {
            Ok(()) => self.keep_tail(&mut state, &data[used..], replies, out),
            Err(violation) => {
                out.extend(replies.into_frame());
                Err(violation)
            }
        }
    }

    /// Keeps the start of a message for the next data, within the size
    /// limit, and sends the answers so far.
    fn keep_tail(
        &self,
        state: &mut State,
        tail: &[u8],
        mut replies: Replies,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        let outcome = if state.partial.len() + tail.len() > self.max_message {
            replies.close_with_error("record too large");
            Err(Violation::TooBig)
        } else {
            state.partial.extend_from_slice(tail);
            Ok(())
        };
        out.extend(replies.into_frame());
        outcome
    }

    /// Answers the whole JSON records in `data`: how many bytes they took.
    fn json_records(&self, data: &[u8], replies: &mut Replies) -> (usize, Result<(), Violation>) {
        // memchr finds separators 16 or 32 bytes at a time; a plain split
        // costs more than the JSON parse on large records.
        let mut start = 0;
        for end in memchr::memchr_iter(RECORD_SEPARATOR, data) {
            let record = &data[start..end];
            start = end + 1;
            let Ok(message) = serde_json::from_slice::<Message>(record) else {
                replies.close_with_error("malformed hub message");
                return (start, Err(Violation::Ended("malformed hub message")));
            };
            let call = Call {
                kind: message.kind,
                invocation_id: message.invocation_id.as_deref(),
                target: message.target.as_deref(),
                arguments: (message.arguments.unwrap_or_default().iter())
                    .map(|raw| Arg::Json(raw.get()))
                    .collect(),
            };
            if let Err(violation) = self.route(&call, record.len(), replies) {
                return (start, Err(violation));
            }
        }
        (start, Ok(()))
    }

    /// Answers the whole MessagePack messages in `data`: how many bytes
    /// they took.
    fn packed_messages(
        &self,
        data: &[u8],
        replies: &mut Replies,
    ) -> (usize, Result<(), Violation>) {
        let mut outcome = Ok(());
        let split = msgpack::split(data, self.max_message, |body| {
            let message = msgpack::parse(body)?;
            let call = Call {
                kind: message.kind,
                invocation_id: message.invocation_id,
                target: message.target,
                arguments: message.arguments.iter().map(|&a| Arg::Packed(a)).collect(),
            };
            outcome = self.route(&call, body.len(), replies);
            // Stops the split; the violation is in `outcome`.
            outcome.as_ref().map_err(|_| "")?;
            Ok(())
        });
        match split {
            Ok(used) => (used, outcome),
            Err(_) if outcome.is_err() => (data.len(), outcome),
            Err(why) => {
                let violation = if why == msgpack::TOO_LARGE {
                    Violation::TooBig
                } else {
                    Violation::Ended("malformed hub message")
                };
                replies.close_with_error(why);
                (data.len(), Err(violation))
            }
        }
    }

    /// The hub's methods, whatever the encoding: the one routing table.
    fn route(&self, call: &Call, bytes: usize, replies: &mut Replies) -> Result<(), Violation> {
        let id = call.invocation_id;
        match call.kind {
            1 => {
                self.stats.messages_in.add(1);
                self.stats.bytes_in.add(bytes as u64);
                match (call.target, call.arguments.as_slice()) {
                    (Some("Echo"), [value]) => replies.completion(id, Ok(Some(*value))),
                    (Some("Echo"), _) => replies.completion(id, Err("Echo takes one argument")),
                    (Some("SendToAll"), [value]) => {
                        self.worker.broadcast(Frames::receive(*value));
                        replies.completion(id, Ok(None));
                    }
                    (Some("SendToAll"), _) => {
                        replies.completion(id, Err("SendToAll takes one argument"))
                    }
                    (Some(other), _) => {
                        let error = format!("Unknown hub method '{other}'");
                        replies.completion(id, Err(&error));
                    }
                    (None, _) => {
                        replies.close_with_error("invocation without a target");
                        return Err(Violation::Ended("invocation without a target"));
                    }
                }
                if id.is_some() {
                    self.stats.messages_out.add(1);
                }
                Ok(())
            }
            4 => {
                replies.completion(id, Err("streaming is not supported by this hub"));
                Ok(())
            }
            // Ping; cancel, stream items, completions; acks and sequence
            // numbers of stateful reconnect, never offered: nothing to answer.
            6 | 5 | 2 | 3 | 8 | 9 => Ok(()),
            7 => Err(Violation::Ended("the client closed the hub connection")),
            _ => {
                replies.close_with_error("unknown hub message type");
                Err(Violation::Ended("unknown hub message type"))
            }
        }
    }
}

impl Frames {
    /// `Receive(value)` in both encodings, from a value in either: the
    /// other encoding is converted once, here. A value the other encoding
    /// cannot hold (a MessagePack map with keys that are not strings, as
    /// JSON) leaves that frame empty, and it is sent to nobody.
    fn receive(value: Arg) -> Frames {
        let frame = |encoding: Encoding, value: Option<Arg>| {
            let Some(value) = value else {
                return Vec::new();
            };
            let mut replies = Replies::new(encoding);
            replies.invocation("Receive", value);
            match replies.into_frame() {
                Some(Out::Owned(bytes, start)) => bytes[start..].to_vec(),
                _ => Vec::new(),
            }
        };
        let (json, packed) = match value {
            Arg::Json(json) => (Some(json.to_string()), msgpack::from_json(json)),
            Arg::Packed(packed) => (msgpack::to_json(packed), Some(packed.to_vec())),
        };
        Frames {
            json: frame(Encoding::Json, json.as_deref().map(Arg::Json)),
            messagepack: frame(Encoding::MessagePack, packed.as_deref().map(Arg::Packed)),
            raw: Vec::new(),
        }
    }
}

fn on_handshake(record: &[u8], replies: &mut Replies) -> Result<Encoding, Violation> {
    match serde_json::from_slice::<Handshake>(record) {
        Ok(Handshake {
            protocol,
            version: 1,
        }) if protocol == "json" || protocol == "messagepack" => {
            replies.record(b"{}");
            Ok(if protocol == "json" {
                Encoding::Json
            } else {
                Encoding::MessagePack
            })
        }
        Ok(Handshake { protocol, version }) => {
            let error = format!(
                "The protocol '{protocol}' version {version} is not supported; \
                 use json or messagepack, version 1."
            );
            replies.record(serde_json::json!({ "error": error }).to_string().as_bytes());
            Err(Violation::Ended("unsupported hub protocol"))
        }
        Err(_) => {
            replies.record(br#"{"error":"malformed handshake"}"#);
            Err(Violation::Ended("malformed hub handshake"))
        }
    }
}

impl Drop for HubSession<'_> {
    fn drop(&mut self) {
        self.worker.mailboxes.borrow_mut().remove(self.key);
    }
}

impl HubSession<'_> {
    /// The next frame waiting in this connection's mailbox, or why it must
    /// close (more output waited than --max-pending-bytes allows).
    pub fn take_pushed(&self) -> Option<Result<Vec<u8>, Violation>> {
        if self.mailbox.overflowed.get() {
            return Some(Err(Violation::Policy(
                "too many broadcasts waiting for this client",
            )));
        }
        let frames = self.mailbox.frames.borrow_mut().pop_front()?;
        let frame = frames.of(&self.mailbox);
        self.mailbox
            .bytes
            .set(self.mailbox.bytes.get() - frame.len() as u64);
        Some(Ok(frame.to_vec()))
    }

    /// Whether the handshake was answered: hub messages (broadcasts,
    /// Pings) go to this connection only from then on.
    pub fn handshaken(&self) -> bool {
        self.mailbox.joined.get()
    }

    /// The encoding the handshake named (JSON until then).
    pub fn encoding(&self) -> Encoding {
        self.mailbox.encoding.get()
    }

    /// Handles the data a fallback transport received (a POST's body): the
    /// answers' payloads, without WebSocket framing, go to `out`.
    pub fn on_transport_data(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Violation> {
        let mut frames = Vec::new();
        let outcome = self.on_data(data, &mut frames);
        for frame in &frames {
            if let Out::Owned(bytes, start) = frame {
                out.extend_from_slice(codec::server_payload(&bytes[*start..]));
            }
        }
        outcome
    }

    /// Whether output overflowed the mailbox.
    pub fn has_overflowed(&self) -> bool {
        self.mailbox.overflowed.get()
    }
}

impl HubSession<'_> {
    /// A message on the raw broadcast endpoint: to everyone, as it came.
    fn broadcast_raw(&self, opcode: OpCode, payload: &[u8]) {
        self.stats.messages_in.add(1);
        self.stats.bytes_in.add(payload.len() as u64);
        self.worker.broadcast(Frames {
            raw: codec::encode(opcode, payload),
            ..Frames::default()
        });
    }
}

impl Handler for HubSession<'_> {
    fn on_message(
        &self,
        opcode: OpCode,
        buf: &mut [u8],
        payload: Range<usize>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        if self.mailbox.raw {
            self.broadcast_raw(opcode, &buf[payload]);
            return Ok(());
        }
        self.on_data(&buf[payload], out)
    }

    fn on_assembled(
        &self,
        opcode: OpCode,
        data: Vec<u8>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        let payload = &data[codec::MAX_SERVER_HEADER..];
        if self.mailbox.raw {
            self.broadcast_raw(opcode, payload);
            return Ok(());
        }
        self.on_data(payload, out)
    }

    fn keep_alive_interval(&self) -> Option<Duration> {
        self.keep_alive
    }

    fn stats(&self) -> &WorkerStats {
        self.stats
    }

    fn keep_alive_frame(&self) -> Vec<u8> {
        // Before its handshake a hub client expects the handshake's answer
        // and nothing else: a WebSocket ping keeps the connection alive
        // without a hub message.
        if self.mailbox.raw || !self.mailbox.joined.get() {
            return codec::encode(OpCode::Ping, b"");
        }
        match self.mailbox.encoding.get() {
            Encoding::Json => codec::encode(OpCode::Text, b"{\"type\":6}\x1e"),
            // A Ping, [6], behind its length.
            Encoding::MessagePack => codec::encode(OpCode::Binary, &[2, 0x91, 0x06]),
        }
    }

    async fn pushed(&self) -> Result<Vec<u8>, Violation> {
        loop {
            if let Some(pushed) = self.take_pushed() {
                return pushed;
            }
            self.mailbox.arrived.notified().await;
        }
    }

    async fn overflowed(&self) {
        while !self.mailbox.overflowed.get() {
            self.mailbox.arrived.notified().await;
        }
    }
}

/// The messages answering one WebSocket message, built into one frame
/// (text for JSON, binary for MessagePack) with room for its header in
/// front.
struct Replies {
    frame: Vec<u8>,
    encoding: Encoding,
}

impl Replies {
    fn new(encoding: Encoding) -> Self {
        Self::with_capacity(encoding, 0)
    }

    /// Answers rarely outgrow their request by more than a few dozen bytes.
    fn with_capacity(encoding: Encoding, request: usize) -> Self {
        let mut frame = Vec::with_capacity(codec::MAX_SERVER_HEADER + request + 64);
        frame.resize(codec::MAX_SERVER_HEADER, 0);
        Replies { frame, encoding }
    }

    /// A JSON record (the handshake's answer is one in either encoding).
    fn record(&mut self, json: &[u8]) {
        self.frame.extend_from_slice(json);
        self.frame.push(RECORD_SEPARATOR);
    }

    /// A Completion: `Ok(Some(value))` a result, `Ok(None)` none, `Err`
    /// an error. Invocations without an id get no answer. Written straight
    /// into the frame: the result is copied once, from the request.
    fn completion(&mut self, id: Option<&str>, result: Result<Option<Arg>, &str>) {
        let Some(id) = id else { return };
        if self.encoding == Encoding::MessagePack {
            let value = result.map(|value| value.map(Arg::packed));
            let result = match &value {
                Ok(value) => Ok(value.as_deref()),
                Err(error) => Err(*error),
            };
            msgpack::Writer(&mut self.frame).completion(id, result);
            return;
        }
        self.frame
            .extend_from_slice(b"{\"type\":3,\"invocationId\":");
        self.json_string(id);
        match result {
            Ok(Some(value)) => {
                self.frame.extend_from_slice(b",\"result\":");
                self.frame.extend_from_slice(value.json().as_bytes());
            }
            Ok(None) => {}
            Err(error) => {
                self.frame.extend_from_slice(b",\"error\":");
                self.json_string(error);
            }
        }
        self.frame.push(b'}');
        self.frame.push(RECORD_SEPARATOR);
    }

    /// An invocation of `target` with one argument, expecting no answer.
    fn invocation(&mut self, target: &str, argument: Arg) {
        if self.encoding == Encoding::MessagePack {
            msgpack::Writer(&mut self.frame).invocation(None, target, &argument.packed());
            return;
        }
        self.frame.extend_from_slice(b"{\"type\":1,\"target\":");
        self.json_string(target);
        self.frame.extend_from_slice(b",\"arguments\":[");
        self.frame.extend_from_slice(argument.json().as_bytes());
        self.frame.extend_from_slice(b"]}");
        self.frame.push(RECORD_SEPARATOR);
    }

    fn json_string(&mut self, s: &str) {
        serde_json::to_writer(&mut self.frame, s).expect("writing to memory");
    }

    fn close_with_error(&mut self, error: &str) {
        if self.encoding == Encoding::MessagePack {
            msgpack::Writer(&mut self.frame).close(error);
            return;
        }
        let record = serde_json::json!({"type": 7, "error": error, "allowReconnect": false});
        self.record(record.to_string().as_bytes());
    }

    fn into_frame(mut self) -> Option<Out> {
        if self.frame.len() == codec::MAX_SERVER_HEADER {
            return None;
        }
        let opcode = match self.encoding {
            Encoding::Json => OpCode::Text,
            Encoding::MessagePack => OpCode::Binary,
        };
        let payload = codec::MAX_SERVER_HEADER..self.frame.len();
        let frame = codec::write_header_before(&mut self.frame, payload, opcode);
        Some(Out::Owned(self.frame, frame.start))
    }
}

impl<'a> Arg<'a> {
    /// The value as JSON. A session answers in the encoding its arguments
    /// came in, so this only converts for a broadcast's other frame; it
    /// stays total all the same (a value JSON cannot hold is null).
    fn json(self) -> Cow<'a, str> {
        match self {
            Arg::Json(json) => Cow::Borrowed(json),
            Arg::Packed(packed) => {
                Cow::Owned(msgpack::to_json(packed).unwrap_or_else(|| "null".into()))
            }
        }
    }

    /// The value as MessagePack; as [`Arg::json`], converting only for the
    /// other encoding's frame (nil for what is not JSON).
    fn packed(self) -> Cow<'a, [u8]> {
        match self {
            Arg::Packed(packed) => Cow::Borrowed(packed),
            Arg::Json(json) => Cow::Owned(msgpack::from_json(json).unwrap_or_else(|| vec![0xC0])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        stats: WorkerStats,
        worker: Rc<HubWorker>,
        inbox: mpsc::UnboundedReceiver<Broadcast>,
    }

    fn fixture() -> Fixture {
        let (tx, inbox) = mpsc::unbounded_channel();
        Fixture {
            stats: WorkerStats::default(),
            worker: HubWorker::new(vec![Inbox {
                channel: tx,
                doorbell: None,
            }]),
            inbox,
        }
    }

    /// The text of a server frame, header stripped.
    fn text(frame: &[u8]) -> String {
        let head = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        assert_eq!(frame[0], 0x81, "a final text frame");
        String::from_utf8(frame[head..].to_vec()).unwrap()
    }

    /// Feeds WebSocket messages; returns the text of each reply frame and
    /// the outcome of the last message.
    fn converse(hub: &HubSession, messages: &[&str]) -> (Vec<String>, Result<(), Violation>) {
        let mut replies = Vec::new();
        let mut outcome = Ok(());
        for message in messages {
            let mut out = Vec::new();
            outcome = hub.on_data(message.as_bytes(), &mut out);
            for piece in out {
                let Out::Owned(bytes, start) = piece else {
                    panic!("hub replies are owned frames")
                };
                replies.push(text(&bytes[start..]));
            }
        }
        (replies, outcome)
    }

    const HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\x1e";

    #[test]
    fn handshake_then_messages_in_the_same_frame() {
        let f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        let first = format!("{HANDSHAKE}{{\"type\":6}}\x1e{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"hi\"],\"invocationId\":\"0\"}}\x1e");
        let (replies, outcome) = converse(&hub, &[&first]);
        assert!(outcome.is_ok());
        assert_eq!(
            replies,
            ["{}\x1e{\"type\":3,\"invocationId\":\"0\",\"result\":\"hi\"}\x1e"]
        );
    }

    #[test]
    fn records_may_span_frames_and_share_them() {
        let f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        let (replies, _) = converse(
            &hub,
            &[
                "{\"protocol\":\"js",
                "on\",\"version\":1}\x1e{\"type\":1,\"target\":\"Echo\",\"argu",
                "ments\":[{\"a\":[1,2.5,null]}],\"invocationId\":\"7\"}\x1e{\"invocationId\":\"8\",\"type\":1,\"target\":\"Echo\",\"arguments\":[42]}\x1e",
            ],
        );
        assert_eq!(
            replies,
            [
                "{}\x1e",
                "{\"type\":3,\"invocationId\":\"7\",\"result\":{\"a\":[1,2.5,null]}}\x1e{\"type\":3,\"invocationId\":\"8\",\"result\":42}\x1e"
            ]
        );
    }

    #[test]
    fn every_message_type_gets_its_answer() {
        let f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        assert!(converse(&hub, &[HANDSHAKE]).1.is_ok());
        let cases = [
            // no invocationId: no answer
            ("{\"type\":1,\"target\":\"Echo\",\"arguments\":[1]}\x1e", None),
            ("{\"type\":1,\"target\":\"Nope\",\"arguments\":[],\"invocationId\":\"1\"}\x1e",
             Some("{\"type\":3,\"invocationId\":\"1\",\"error\":\"Unknown hub method 'Nope'\"}\x1e")),
            ("{\"type\":1,\"target\":\"Echo\",\"arguments\":[1,2],\"invocationId\":\"2\"}\x1e",
             Some("{\"type\":3,\"invocationId\":\"2\",\"error\":\"Echo takes one argument\"}\x1e")),
            ("{\"type\":4,\"target\":\"Echo\",\"arguments\":[1],\"invocationId\":\"3\"}\x1e",
             Some("{\"type\":3,\"invocationId\":\"3\",\"error\":\"streaming is not supported by this hub\"}\x1e")),
            ("{\"type\":6}\x1e", None),
            ("{\"type\":5,\"invocationId\":\"3\"}\x1e", None),
        ];
        for (input, expected) in cases {
            let (replies, outcome) = converse(&hub, &[input]);
            assert!(outcome.is_ok(), "{input}");
            assert_eq!(replies.first().map(String::as_str), expected, "{input}");
        }
        assert_eq!(
            converse(&hub, &["{\"type\":7}\x1e"]).1,
            Err(Violation::Ended("the client closed the hub connection"))
        );
    }

    /// A connection whose handshake is not answered yet gets neither
    /// broadcasts nor hub Pings: the official client takes any hub message
    /// before the handshake's answer for a broken server ("Expected a
    /// handshake response from the server") and fails its start.
    #[test]
    fn nothing_but_the_handshake_answer_before_the_handshake() {
        let mut f = fixture();
        let sender = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        let early = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        assert!(converse(&sender, &[HANDSHAKE]).1.is_ok());
        let send = "{\"type\":1,\"target\":\"SendToAll\",\"arguments\":[1]}\x1e";
        assert!(converse(&sender, &[send]).1.is_ok());
        let frame = f.inbox.try_recv().expect("a broadcast on the queue");
        f.worker.deliver_one(&frame);
        assert!(sender.take_pushed().is_some(), "the sender hears itself");
        assert!(
            early.take_pushed().is_none(),
            "no broadcast before the handshake"
        );
        assert!(!early.handshaken());
        assert_eq!(
            early.keep_alive_frame(),
            [0x89, 0],
            "a WebSocket ping, not a hub Ping"
        );

        let (replies, outcome) = converse(&early, &[HANDSHAKE]);
        assert!(outcome.is_ok());
        assert_eq!(replies, ["{}\x1e"]);
        assert!(early.handshaken());
        assert_eq!(text(&early.keep_alive_frame()), "{\"type\":6}\x1e");
        assert!(converse(&sender, &[send]).1.is_ok());
        let frame = f.inbox.try_recv().expect("a broadcast on the queue");
        f.worker.deliver_one(&frame);
        let heard = early
            .take_pushed()
            .expect("a broadcast once joined")
            .unwrap();
        assert_eq!(
            text(&heard),
            "{\"type\":1,\"target\":\"Receive\",\"arguments\":[1]}\x1e"
        );
    }

    #[test]
    fn send_to_all_goes_through_every_cores_queue() {
        let mut f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        assert!(converse(&hub, &[HANDSHAKE]).1.is_ok());
        let (replies, _) = converse(&hub, &["{\"type\":1,\"target\":\"SendToAll\",\"arguments\":[\"news\"],\"invocationId\":\"9\"}\x1e"]);
        assert_eq!(replies, ["{\"type\":3,\"invocationId\":\"9\"}\x1e"]);
        let frame = f.inbox.try_recv().expect("a broadcast on the queue");
        assert_eq!(
            text(&frame.json),
            "{\"type\":1,\"target\":\"Receive\",\"arguments\":[\"news\"]}\x1e"
        );
        // The same broadcast for MessagePack connections: [1, {}, nil,
        // "Receive", ["news"], []] behind its length, in a binary frame.
        assert_eq!(
            frame.messagepack,
            [
                &[0x82, 20, 19, 0x96, 1, 0x80, 0xc0, 0xa7][..],
                b"Receive",
                &[0x91, 0xa4],
                b"news",
                &[0x90]
            ]
            .concat()
        );
    }

    /// A MessagePack connection: the JSON handshake and its JSON answer,
    /// then binary frames of length-prefixed messages, answered in kind;
    /// a message split across frames waits for its end; pings and
    /// broadcasts in its encoding.
    #[test]
    fn messagepack_connections_are_answered_in_messagepack() {
        let mut f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        let mut out = Vec::new();
        let handshake = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";
        assert!(hub.on_data(handshake, &mut out).is_ok());
        let frames = |out: Vec<Out>| -> Vec<Vec<u8>> {
            out.into_iter()
                .map(|piece| match piece {
                    Out::Owned(bytes, start) => bytes[start..].to_vec(),
                    _ => panic!("hub replies are owned frames"),
                })
                .collect()
        };
        assert_eq!(
            frames(std::mem::take(&mut out)),
            [b"\x81\x03{}\x1e".to_vec()]
        );
        let echo = |id: &str, argument: &[u8]| {
            let mut data = Vec::new();
            let mut body = vec![0x96, 1, 0x80];
            rmp::encode::write_str(&mut body, id).unwrap();
            rmp::encode::write_str(&mut body, "Echo").unwrap();
            body.push(0x91);
            body.extend_from_slice(argument);
            body.push(0x90);
            data.push(body.len() as u8);
            data.extend_from_slice(&body);
            data
        };
        // Two messages in one frame, the second cut in two across frames.
        let (first, second) = (echo("1", &[0x2a]), echo("2", &[0xa2, b'h', b'i']));
        let mut data = first.clone();
        data.extend_from_slice(&second[..4]);
        assert!(hub.on_data(&data, &mut out).is_ok());
        assert!(hub.on_data(&second[4..], &mut out).is_ok());
        let replies = frames(std::mem::take(&mut out));
        assert_eq!(
            replies,
            [
                vec![0x82, 8, 7, 0x95, 3, 0x80, 0xa1, b'1', 3, 0x2a],
                vec![0x82, 10, 9, 0x95, 3, 0x80, 0xa1, b'2', 3, 0xa2, b'h', b'i'],
            ]
        );
        assert_eq!(hub.keep_alive_frame(), [0x82, 3, 2, 0x91, 6]);

        // SendToAll from MessagePack reaches JSON connections as JSON.
        let mut body = vec![0x96, 1, 0x80, 0xa1, b'3'];
        rmp::encode::write_str(&mut body, "SendToAll").unwrap();
        body.extend_from_slice(&[0x91, 0x81, 0xa1, b'n', 0x07, 0x90]);
        let mut data = vec![body.len() as u8];
        data.extend_from_slice(&body);
        assert!(hub.on_data(&data, &mut out).is_ok());
        assert_eq!(
            frames(out),
            [vec![0x82, 7, 6, 0x94, 3, 0x80, 0xa1, b'3', 2]]
        );
        let frame = f.inbox.try_recv().expect("a broadcast on the queue");
        assert_eq!(
            text(&frame.json),
            "{\"type\":1,\"target\":\"Receive\",\"arguments\":[{\"n\":7}]}\x1e"
        );
        // Malformed MessagePack: a Close in MessagePack, and the end.
        let mut out = Vec::new();
        let outcome = hub.on_data(&[3, 0x93, 0xc1, 0x00], &mut out);
        assert_eq!(outcome, Err(Violation::Ended("malformed hub message")));
        let close = &frames(out)[0];
        assert_eq!(close[..4], [0x82, close[1], close[1] - 1, 0x93]);
        assert_eq!(close[4], 7, "a Close message");
    }

    #[test]
    fn malformed_input_gets_a_close_with_an_error_never_a_panic() {
        for bad in [
            "{\"type\":1,",
            "[1,2]",
            "{\"type\":\"one\"}",
            "{\"type\":99}",
            "\u{0}\u{1}",
            "{\"type\":1,\"arguments\":[1],\"invocationId\":\"1\"}",
        ] {
            let f = fixture();
            let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
            assert!(converse(&hub, &[HANDSHAKE]).1.is_ok());
            let (replies, outcome) = converse(&hub, &[&format!("{bad}\x1e")]);
            assert!(matches!(outcome, Err(Violation::Ended(_))), "{bad:?}");
            assert!(
                replies[0].starts_with("{\"allowReconnect\":false,\"error\":")
                    && replies[0].contains("\"type\":7"),
                "{bad:?}: {replies:?}"
            );
        }
        for handshake in [
            "{\"protocol\":\"protobuf\",\"version\":1}\x1e",
            "{\"protocol\":\"json\",\"version\":2}\x1e",
            "nonsense\x1e",
        ] {
            let f = fixture();
            let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
            let (replies, outcome) = converse(&hub, &[handshake]);
            assert!(outcome.is_err());
            assert!(replies[0].starts_with("{\"error\":"), "{replies:?}");
        }
    }

    #[test]
    fn an_endless_record_is_refused() {
        let f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 100, 1 << 20);
        assert!(converse(&hub, &[HANDSHAKE]).1.is_ok());
        let (_, outcome) = converse(&hub, &[&"x".repeat(60), &"x".repeat(60)]);
        assert_eq!(outcome, Err(Violation::TooBig));
    }

    #[test]
    fn tokens_are_used_once() {
        let tokens = Tokens::default();
        let offered = [Transport::Websockets, Transport::ServerSentEvents];
        let body: serde_json::Value = serde_json::from_str(&tokens.negotiate(&offered)).unwrap();
        assert_eq!(body["negotiateVersion"], 1);
        let transports = &body["availableTransports"];
        assert_eq!(transports[0]["transport"], "WebSockets");
        assert_eq!(transports[1]["transport"], "ServerSentEvents");
        assert_eq!(
            transports[1]["transferFormats"],
            serde_json::json!(["Text"])
        );
        assert_eq!(transports.as_array().unwrap().len(), 2);
        let token = body["connectionToken"].as_str().unwrap();
        assert!(tokens.redeem(token));
        assert!(!tokens.redeem(token), "a reused token");
        assert!(!tokens.redeem("made-up"));
    }
}

//! The SignalR JSON hub protocol, as the official client speaks it.
//!
//! A hub connection is a WebSocket session whose [`Handler`] is [`HubSession`]:
//! text records ended by 0x1E (several may share a frame, one may span
//! frames), first the handshake, then messages. `Echo(x)` answers with a
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
//! starts.

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
use tokio::sync::{mpsc, Notify};

use crate::codec::{self, Violation};
use crate::session::Handler;
use crate::session::Out;
use crate::stats::WorkerStats;

/// Ends every hub record.
pub const RECORD_SEPARATOR: u8 = 0x1E;
/// Negotiated tokens not used within this time are forgotten.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// A frame for every hub connection, shared by the cores it is sent to.
pub type Broadcast = Arc<Vec<u8>>;

/// Negotiated connection tokens, shared by all cores (cold path only).
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, Instant>>);

impl Tokens {
    /// The body of a negotiate response, with a new token remembered.
    pub fn negotiate(&self) -> String {
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
            "availableTransports": [
                {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
            ],
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
            let bytes = mailbox.bytes.get() + frame.len() as u64;
            if bytes > mailbox.limit {
                mailbox.overflowed.set(true);
            } else {
                mailbox.bytes.set(bytes);
                mailbox.frames.borrow_mut().push_back(frame.clone());
            }
            mailbox.arrived.notify_one();
        }
    }

    fn broadcast(&self, frame: Vec<u8>) {
        let frame = Arc::new(frame);
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
    /// The start of a record whose separator has not arrived yet.
    partial: Vec<u8>,
}

impl<'a> HubSession<'a> {
    pub fn new(
        worker: Rc<HubWorker>,
        stats: &'a WorkerStats,
        keep_alive: Option<Duration>,
        max_message: usize,
        max_pending: u64,
    ) -> Self {
        let mailbox = Rc::new(Mailbox {
            limit: max_pending,
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

    /// Handles the bytes of one WebSocket message: complete records are
    /// answered in one text frame; an incomplete tail waits for the next.
    fn on_data(&self, data: &[u8], out: &mut Vec<Out>) -> Result<(), Violation> {
        let mut state = self.state.borrow_mut();
        let mut replies = Replies::with_capacity(data.len());
        let joined;
        let data = if state.partial.is_empty() {
            data
        } else {
            state.partial.extend_from_slice(data);
            joined = std::mem::take(&mut state.partial);
            &joined[..]
        };
        // memchr finds separators 16 or 32 bytes at a time; a plain split
        // costs more than the JSON parse on large records.
        let mut start = 0;
        let mut records = memchr::memchr_iter(RECORD_SEPARATOR, data).map(|end| {
            let record = &data[start..end];
            start = end + 1;
            record
        });
        let mut outcome = Ok(());
        for record in records.by_ref() {
            outcome = if state.handshaken {
                self.on_record(record, &mut replies)
            } else {
                state.handshaken = true;
                on_handshake(record, &mut replies)
            };
            if outcome.is_err() {
                break;
            }
        }
        drop(records);
        let tail = &data[start..];
        if outcome.is_ok() {
            if state.partial.len() + tail.len() > self.max_message {
                replies.close_with_error("record too large");
                outcome = Err(Violation::TooBig);
            } else {
                state.partial.extend_from_slice(tail);
            }
        }
        if let Some(frame) = replies.into_frame() {
            out.push(frame);
        }
        outcome
    }

    fn on_record(&self, record: &[u8], replies: &mut Replies) -> Result<(), Violation> {
        let Ok(message) = serde_json::from_slice::<Message>(record) else {
            replies.close_with_error("malformed hub message");
            return Err(Violation::Ended("malformed hub message"));
        };
        let id = message.invocation_id.as_deref();
        match message.kind {
            1 => {
                self.stats.messages_in.add(1);
                self.stats.bytes_in.add(record.len() as u64);
                let arguments = message.arguments.unwrap_or_default();
                match (message.target.as_deref(), arguments.as_slice()) {
                    (Some("Echo"), [value]) => replies.completion(id, Ok(Some(value.get()))),
                    (Some("Echo"), _) => replies.completion(id, Err("Echo takes one argument")),
                    (Some("SendToAll"), [value]) => {
                        let mut frame = Replies::new();
                        frame.invocation("Receive", value.get());
                        if let Some(Out::Owned(bytes, start)) = frame.into_frame() {
                            self.worker.broadcast(bytes[start..].to_vec());
                        }
                        replies.completion(id, Ok(None));
                    }
                    (Some("SendToAll"), _) => {
                        replies.completion(id, Err("SendToAll takes one argument"))
                    }
                    (Some(other), _) => {
                        let error = format!("Unknown hub method '{other}'");
                        replies.completion_error(id, &error);
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
            6 | 5 | 2 | 3 => Ok(()), // Ping; cancel, stream items, completions: nothing to answer
            7 => Err(Violation::Ended("the client closed the hub connection")),
            _ => {
                replies.close_with_error("unknown hub message type");
                Err(Violation::Ended("unknown hub message type"))
            }
        }
    }
}

fn on_handshake(record: &[u8], replies: &mut Replies) -> Result<(), Violation> {
    match serde_json::from_slice::<Handshake>(record) {
        Ok(Handshake {
            protocol,
            version: 1,
        }) if protocol == "json" => {
            replies.record(b"{}");
            Ok(())
        }
        Ok(Handshake { protocol, version }) => {
            let error = format!(
                "The protocol '{protocol}' version {version} is not supported; use json version 1."
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
        let frame = self.mailbox.frames.borrow_mut().pop_front()?;
        self.mailbox
            .bytes
            .set(self.mailbox.bytes.get() - frame.len() as u64);
        Some(Ok(frame.to_vec()))
    }

    /// Whether output overflowed the mailbox.
    pub fn has_overflowed(&self) -> bool {
        self.mailbox.overflowed.get()
    }
}

impl Handler for HubSession<'_> {
    fn on_message(
        &self,
        _opcode: OpCode,
        buf: &mut [u8],
        payload: Range<usize>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        self.on_data(&buf[payload], out)
    }

    fn on_assembled(
        &self,
        _opcode: OpCode,
        data: Vec<u8>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        self.on_data(&data[codec::MAX_SERVER_HEADER..], out)
    }

    fn keep_alive_interval(&self) -> Option<Duration> {
        self.keep_alive
    }

    fn stats(&self) -> &WorkerStats {
        self.stats
    }

    fn keep_alive_frame(&self) -> Vec<u8> {
        codec::encode(OpCode::Text, b"{\"type\":6}\x1e")
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

/// The records answering one message, built into one text frame with room
/// for its header in front.
struct Replies(Vec<u8>);

impl Replies {
    fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Answers rarely outgrow their request by more than a few dozen bytes.
    fn with_capacity(request: usize) -> Self {
        let mut frame = Vec::with_capacity(codec::MAX_SERVER_HEADER + request + 64);
        frame.resize(codec::MAX_SERVER_HEADER, 0);
        Replies(frame)
    }

    fn record(&mut self, json: &[u8]) {
        self.0.extend_from_slice(json);
        self.0.push(RECORD_SEPARATOR);
    }

    /// A Completion: `Ok(Some(raw JSON))` a result, `Ok(None)` none,
    /// `Err` an error. Invocations without an id get no answer. Written
    /// straight into the frame: the result is copied once, from the request.
    fn completion(&mut self, id: Option<&str>, result: Result<Option<&str>, &str>) {
        let Some(id) = id else { return };
        self.0.extend_from_slice(b"{\"type\":3,\"invocationId\":");
        self.json_string(id);
        match result {
            Ok(Some(value)) => {
                self.0.extend_from_slice(b",\"result\":");
                self.0.extend_from_slice(value.as_bytes());
            }
            Ok(None) => {}
            Err(error) => {
                self.0.extend_from_slice(b",\"error\":");
                self.json_string(error);
            }
        }
        self.0.push(b'}');
        self.0.push(RECORD_SEPARATOR);
    }

    fn completion_error(&mut self, id: Option<&str>, error: &str) {
        self.completion(id, Err(error));
    }

    fn invocation(&mut self, target: &str, argument: &str) {
        self.0.extend_from_slice(b"{\"type\":1,\"target\":");
        self.json_string(target);
        self.0.extend_from_slice(b",\"arguments\":[");
        self.0.extend_from_slice(argument.as_bytes());
        self.0.extend_from_slice(b"]}");
        self.0.push(RECORD_SEPARATOR);
    }

    fn json_string(&mut self, s: &str) {
        serde_json::to_writer(&mut self.0, s).expect("writing to memory");
    }

    fn close_with_error(&mut self, error: &str) {
        let record = serde_json::json!({"type": 7, "error": error, "allowReconnect": false});
        self.record(record.to_string().as_bytes());
    }

    fn into_frame(mut self) -> Option<Out> {
        if self.0.len() == codec::MAX_SERVER_HEADER {
            return None;
        }
        let payload = codec::MAX_SERVER_HEADER..self.0.len();
        let frame = codec::write_header_before(&mut self.0, payload, OpCode::Text);
        Some(Out::Owned(self.0, frame.start))
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

    #[test]
    fn send_to_all_goes_through_every_cores_queue() {
        let mut f = fixture();
        let hub = HubSession::new(f.worker.clone(), &f.stats, None, 1 << 20, 1 << 20);
        assert!(converse(&hub, &[HANDSHAKE]).1.is_ok());
        let (replies, _) = converse(&hub, &["{\"type\":1,\"target\":\"SendToAll\",\"arguments\":[\"news\"],\"invocationId\":\"9\"}\x1e"]);
        assert_eq!(replies, ["{\"type\":3,\"invocationId\":\"9\"}\x1e"]);
        let frame = f.inbox.try_recv().expect("a broadcast on the queue");
        assert_eq!(
            text(&frame),
            "{\"type\":1,\"target\":\"Receive\",\"arguments\":[\"news\"]}\x1e"
        );
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
            "{\"protocol\":\"messagepack\",\"version\":1}\x1e",
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
        let body: serde_json::Value = serde_json::from_str(&tokens.negotiate()).unwrap();
        assert_eq!(body["negotiateVersion"], 1);
        assert_eq!(body["availableTransports"][0]["transport"], "WebSockets");
        let token = body["connectionToken"].as_str().unwrap();
        assert!(tokens.redeem(token));
        assert!(!tokens.redeem(token), "a reused token");
        assert!(!tokens.redeem("made-up"));
    }
}

//! The WebSocket session: the WebSocket phase of a connection.
//!
//! [`Session`] is the protocol state machine, with no I/O: given the bytes of
//! a receive buffer it answers with the pieces to send. What it does with a
//! complete data message is its [`Handler`]'s business: [`RawEcho`] sends it
//! back from the memory it arrived in; the hub protocol answers invocations.
//! [`timers`] holds the deadlines a session keeps (keep-alive, client
//! timeout, close wait). The drivers feed it: the native ring's connections
//! (`driver::ring`) straight from completions, and `driver::task` from a
//! tokio task per connection for the epoll and tokio-uring backends.
//!
//! Payload copies per message:
//! - whole in one receive buffer: none. The payload is unmasked in place and
//!   the echo's header is written over the tail of the client's header.
//! - larger than the receive buffer, or fragmented: one, into an assembly
//!   buffer that keeps room for the header in front, sent as one frame.

pub mod out;
pub mod timers;

use std::ops::Range;
use std::time::Duration;

use fastwebsockets::OpCode;

use crate::codec::{self, Header, Violation};
use crate::stats::WorkerStats;

pub use out::Out;
pub(crate) use timers::{Due, Timers, CLOSE_WAIT};
/// Assembly buffers start at most this large; they grow as data arrives, so
/// a client announcing a large frame cannot make the engine allocate it upfront.
const ASSEMBLY_RESERVE: u64 = 1 << 20;

/// Where the conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    /// The server sent a close and waits for the client's.
    Closing,
    /// The close handshake is over (or cannot happen): close the socket.
    Done,
}

/// A message being reassembled from fragments or from several reads.
struct Message {
    opcode: OpCode,
    /// `MAX_SERVER_HEADER` reserved bytes, then the unmasked payload so far.
    data: Vec<u8>,
    /// Text is checked as it arrives, so that invalid UTF-8 fails the
    /// connection at once rather than when the message ends: `data` is valid
    /// up to here, and what follows is at most an incomplete character.
    valid_up_to: usize,
}

/// A data frame too large for the receive buffer, whose payload continues in
/// the next reads.
struct Spanning {
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes of this frame already consumed.
    offset: u64,
    remaining: u64,
    /// Closing: the payload is skipped, not assembled.
    discard: bool,
}

/// What a session does with complete data messages. Methods take `&self` so
/// that the session loop can wait on [`Handler::pushed`] while handling input.
#[allow(async_fn_in_trait)] // static dispatch, one thread
pub trait Handler {
    /// A message that arrived whole in one frame, unmasked in place at
    /// `payload` (text already checked as UTF-8).
    fn on_message(
        &self,
        opcode: OpCode,
        buf: &mut [u8],
        payload: Range<usize>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation>;

    /// A message assembled from fragments or from several reads: `data`
    /// holds `MAX_SERVER_HEADER` spare bytes, then the payload.
    fn on_assembled(
        &self,
        opcode: OpCode,
        data: Vec<u8>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation>;

    /// How often the keep-alive frame goes out, if at all.
    fn keep_alive_interval(&self) -> Option<Duration>;

    /// The keep-alive frame: a WebSocket ping for the raw echo.
    fn keep_alive_frame(&self) -> Vec<u8>;

    /// The next frame others want sent on this connection (hub broadcasts),
    /// or why the connection must close (too much output waiting).
    async fn pushed(&self) -> Result<Vec<u8>, Violation>;

    /// Completes when output for this connection overflowed while a send to
    /// it was blocked: that send is abandoned and the connection closed.
    async fn overflowed(&self);
}

impl<H: Handler> Handler for &H {
    fn on_message(
        &self,
        opcode: OpCode,
        buf: &mut [u8],
        payload: Range<usize>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        (**self).on_message(opcode, buf, payload, out)
    }

    fn on_assembled(
        &self,
        opcode: OpCode,
        data: Vec<u8>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        (**self).on_assembled(opcode, data, out)
    }

    fn keep_alive_interval(&self) -> Option<Duration> {
        (**self).keep_alive_interval()
    }

    fn keep_alive_frame(&self) -> Vec<u8> {
        (**self).keep_alive_frame()
    }

    async fn pushed(&self) -> Result<Vec<u8>, Violation> {
        (**self).pushed().await
    }

    async fn overflowed(&self) {
        (**self).overflowed().await
    }
}

/// The raw echo: every message back with its opcode, from the same memory.
pub struct RawEcho<'a> {
    pub stats: &'a WorkerStats,
    pub keep_alive: Option<Duration>,
}

impl Handler for RawEcho<'_> {
    fn on_message(
        &self,
        opcode: OpCode,
        buf: &mut [u8],
        payload: Range<usize>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        self.count(payload.len());
        out.push(Out::Recv(codec::write_header_before(buf, payload, opcode)));
        Ok(())
    }

    fn on_assembled(
        &self,
        opcode: OpCode,
        mut data: Vec<u8>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        let payload = codec::MAX_SERVER_HEADER..data.len();
        self.count(payload.len());
        let frame = codec::write_header_before(&mut data, payload, opcode);
        out.push(Out::Owned(data, frame.start));
        Ok(())
    }

    fn keep_alive_interval(&self) -> Option<Duration> {
        self.keep_alive
    }

    fn keep_alive_frame(&self) -> Vec<u8> {
        codec::encode(OpCode::Ping, b"")
    }

    async fn pushed(&self) -> Result<Vec<u8>, Violation> {
        std::future::pending().await
    }

    async fn overflowed(&self) {
        std::future::pending().await
    }
}

impl RawEcho<'_> {
    fn count(&self, len: usize) {
        self.stats.messages_in.add(1);
        self.stats.bytes_in.add(len as u64);
        self.stats.messages_out.add(1);
        self.stats.bytes_out.add(len as u64);
    }
}

/// The WebSocket protocol of one connection.
pub struct Session<H> {
    handler: H,
    /// Receive buffer size: frames up to this size are handled in place.
    capacity: usize,
    max_message: u64,
    phase: Phase,
    message: Option<Message>,
    spanning: Option<Spanning>,
    /// The code that ended the conversation, for `/stats`.
    close_code: Option<u16>,
}

impl<H: Handler> Session<H> {
    pub fn new(handler: H, capacity: usize, max_message: usize) -> Self {
        Session {
            handler,
            capacity,
            max_message: max_message as u64,
            phase: Phase::Open,
            message: None,
            spanning: None,
            close_code: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Handles every complete frame at the front of `buf` and pushes the
    /// replies to `out`. Returns how many bytes were consumed; the rest is the
    /// start of a frame that needs more bytes.
    pub fn on_bytes(&mut self, buf: &mut [u8], out: &mut Vec<Out>) -> usize {
        let mut pos = 0;
        while pos < buf.len() && self.phase != Phase::Done {
            if self.spanning.is_some() {
                pos += self.continue_spanning(&mut buf[pos..], out);
                continue;
            }
            let assembled = self.message.as_ref().map_or(0, |m| payload_len(&m.data));
            let limit = self.max_message.saturating_sub(assembled);
            let header = match codec::parse_header(&buf[pos..], limit) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(violation) => {
                    self.fail(violation, out);
                    break;
                }
            };
            let available = (buf.len() - pos) as u64;
            let step = if header.frame_len() <= available {
                let payload = pos + header.len..pos + header.frame_len() as usize;
                self.on_frame(&header, buf, payload, out)
                    .map(|()| header.frame_len() as usize)
            } else if header.frame_len() <= self.capacity as u64 {
                break; // fits once the rest arrives
            } else {
                self.begin_spanning(&header).map(|()| header.len)
            };
            match step {
                Ok(n) => pos += n,
                Err(violation) => {
                    self.fail(violation, out);
                    break;
                }
            }
        }
        if self.phase == Phase::Done {
            buf.len()
        } else {
            pos
        }
    }

    fn on_frame(
        &mut self,
        h: &Header,
        buf: &mut [u8],
        payload: Range<usize>,
        out: &mut Vec<Out>,
    ) -> Result<(), Violation> {
        let closing = self.phase == Phase::Closing;
        // Payloads used where they are are unmasked in place; fragments of
        // a message are unmasked as they are copied into it; ignored ones
        // are left as they came.
        let unmask = |buf: &mut [u8]| codec::unmask_at(&mut buf[payload.clone()], h.mask, 0);
        match h.opcode {
            OpCode::Text | OpCode::Binary if closing => Ok(()),
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(Violation::Protocol("new message before the last one ended"));
                }
                if !h.fin {
                    let mut message = Message::start(h.opcode, h.payload_len);
                    message.append(&buf[payload], h.mask, 0)?;
                    self.message = Some(message);
                    return Ok(());
                }
                unmask(buf);
                if h.opcode == OpCode::Text && !codec::is_utf8(&buf[payload.clone()]) {
                    return Err(Violation::InvalidUtf8);
                }
                self.handler.on_message(h.opcode, buf, payload, out)
            }
            OpCode::Continuation if closing => Ok(()),
            OpCode::Continuation => {
                let message = self
                    .message
                    .as_mut()
                    .ok_or(Violation::Protocol("continuation frame without a message"))?;
                message.append(&buf[payload], h.mask, 0)?;
                if h.fin {
                    self.finish_message(out)?;
                }
                Ok(())
            }
            OpCode::Ping if closing => Ok(()),
            OpCode::Ping => {
                unmask(buf);
                out.push(Out::Recv(codec::write_header_before(
                    buf,
                    payload,
                    OpCode::Pong,
                )));
                Ok(())
            }
            OpCode::Pong => Ok(()),
            OpCode::Close => {
                unmask(buf);
                // A bad close from the client still ends the conversation:
                // answer it with the right code, and expect nothing more.
                let code = codec::parse_close(&buf[payload.clone()]).inspect_err(|_| {
                    self.phase = Phase::Done;
                })?;
                if self.phase == Phase::Open {
                    // As ASP.NET's sample does: the same code and reason back,
                    // here from the memory the client's close arrived in.
                    match code {
                        Some(_) => out.push(Out::Recv(codec::write_header_before(
                            buf,
                            payload,
                            OpCode::Close,
                        ))),
                        None => out.push(Out::Owned(codec::encode_close(1000, ""), 0)),
                    }
                    self.close_code = Some(code.unwrap_or(1005));
                }
                self.phase = Phase::Done;
                Ok(())
            }
        }
    }

    fn begin_spanning(&mut self, h: &Header) -> Result<(), Violation> {
        let discard = self.phase == Phase::Closing;
        if !discard {
            match (h.opcode, &self.message) {
                (OpCode::Continuation, None) => {
                    return Err(Violation::Protocol("continuation frame without a message"))
                }
                (OpCode::Continuation, Some(_)) => {}
                (_, Some(_)) => {
                    return Err(Violation::Protocol("new message before the last one ended"))
                }
                (opcode, None) => self.message = Some(Message::start(opcode, h.payload_len)),
            }
        }
        self.spanning = Some(Spanning {
            fin: h.fin,
            mask: h.mask,
            offset: 0,
            remaining: h.payload_len,
            discard,
        });
        Ok(())
    }

    /// Consumes the part of a spanning frame's payload found in `buf`.
    fn continue_spanning(&mut self, buf: &mut [u8], out: &mut Vec<Out>) -> usize {
        let span = self.spanning.as_mut().expect("a spanning frame");
        let take = span.remaining.min(buf.len() as u64) as usize;
        if !span.discard {
            let message = self
                .message
                .as_mut()
                .expect("spanning frames belong to a message");
            if let Err(violation) = message.append(&buf[..take], span.mask, span.offset) {
                self.fail(violation, out);
                return take;
            }
        }
        let span = self.spanning.as_mut().expect("a spanning frame");
        span.offset += take as u64;
        span.remaining -= take as u64;
        if span.remaining == 0 {
            let finished = span.fin && !span.discard;
            self.spanning = None;
            if finished {
                if let Err(violation) = self.finish_message(out) {
                    self.fail(violation, out);
                }
            }
        }
        take
    }

    fn finish_message(&mut self, out: &mut Vec<Out>) -> Result<(), Violation> {
        let message = self.message.take().expect("a message");
        if message.opcode == OpCode::Text && message.valid_up_to != message.data.len() {
            return Err(Violation::InvalidUtf8); // ends inside a character
        }
        self.handler.on_assembled(message.opcode, message.data, out)
    }

    /// Fails the connection: our close with the violation's code, then wait
    /// for the client's (unless the conversation is already over).
    fn fail(&mut self, violation: Violation, out: &mut Vec<Out>) {
        tracing::debug!(
            code = violation.close_code(),
            "closing: {}",
            violation.reason()
        );
        if self.close_code.is_none() {
            let code = violation.close_code();
            out.push(Out::Owned(codec::encode_close(code, violation.reason()), 0));
            self.close_code = Some(code);
        }
        self.message = None;
        self.spanning = None;
        if self.phase == Phase::Open {
            self.phase = Phase::Closing;
        }
    }

    /// Starts a server-initiated close (shutdown, client timeout): returns
    /// the close frame to send.
    pub fn close(&mut self, code: u16, reason: &str) -> Vec<u8> {
        self.close_code.get_or_insert(code);
        self.phase = Phase::Closing;
        codec::encode_close(code, reason)
    }
}

impl Message {
    fn start(opcode: OpCode, frame_len: u64) -> Self {
        let reserve = codec::MAX_SERVER_HEADER + frame_len.min(ASSEMBLY_RESERVE) as usize;
        let mut data = out::frame_buffer(reserve);
        data.resize(codec::MAX_SERVER_HEADER, 0);
        Message {
            opcode,
            data,
            valid_up_to: codec::MAX_SERVER_HEADER,
        }
    }

    /// Appends a piece of a frame's payload, still masked, that starts at
    /// `offset` of that payload.
    fn append(&mut self, masked: &[u8], mask: [u8; 4], offset: u64) -> Result<(), Violation> {
        codec::unmask_into(&mut self.data, masked, mask, offset);
        self.check_utf8()
    }

    fn check_utf8(&mut self) -> Result<(), Violation> {
        if self.opcode != OpCode::Text {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(&self.data[self.valid_up_to..]) {
            Ok(_) => self.valid_up_to = self.data.len(),
            Err(e) if e.error_len().is_none() => self.valid_up_to += e.valid_up_to(),
            Err(_) => return Err(Violation::InvalidUtf8),
        }
        Ok(())
    }
}

fn payload_len(data: &[u8]) -> u64 {
    (data.len() - codec::MAX_SERVER_HEADER) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        codec::encode_masked(fin, opcode, payload, [0x11, 0x22, 0x33, 0x44])
    }

    /// Feeds `input` through a session in reads of at most `capacity` bytes,
    /// the way the driver loop does, and returns everything it would send.
    fn converse(input: &[u8], capacity: usize) -> (Vec<u8>, Phase, Option<u16>) {
        let stats = WorkerStats::default();
        let handler = RawEcho {
            stats: &stats,
            keep_alive: None,
        };
        let mut echo = Session::new(&handler, capacity, 1 << 20);
        let mut buf = vec![0u8; capacity];
        let mut filled = 0;
        let mut sent = Vec::new();
        let mut out = Vec::new();
        let mut input = input;
        while echo.phase() != Phase::Done {
            let n = (capacity - filled).min(input.len());
            if n == 0 && filled == 0 {
                break;
            }
            buf[filled..filled + n].copy_from_slice(&input[..n]);
            input = &input[n..];
            filled += n;
            let consumed = echo.on_bytes(&mut buf[..filled], &mut out);
            for piece in out.drain(..) {
                match piece {
                    Out::Recv(r) => sent.extend_from_slice(&buf[r]),
                    Out::Owned(v, s) => sent.extend_from_slice(&v[s..]),
                }
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if n == 0 && consumed == 0 {
                break;
            }
        }
        (sent, echo.phase(), echo.close_code())
    }

    #[test]
    fn echoes_pipelined_frames_in_order_at_every_buffer_size() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (i, len) in [0usize, 5, 125, 126, 300, 4000, 70000]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            input.extend(client_frame(true, 2, &payload));
            expected.extend(codec::encode(OpCode::Binary, &payload));
            input.extend(client_frame(true, 9, b"hi"));
            expected.extend(codec::encode(OpCode::Pong, b"hi"));
        }
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice("done".as_bytes());
        input.extend(client_frame(true, 8, &close));
        expected.extend(codec::encode_close(1000, "done"));
        for capacity in [256, 1000, 4096, 65536, 1 << 20] {
            let (sent, phase, code) = converse(&input, capacity);
            assert_eq!(sent, expected, "capacity {capacity}");
            assert_eq!(phase, Phase::Done);
            assert_eq!(code, Some(1000));
        }
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut input = client_frame(false, 1, "héllo ".as_bytes());
        input.extend(client_frame(true, 9, b"p"));
        input.extend(client_frame(false, 0, &[b'w'; 3000]));
        input.extend(client_frame(true, 0, "wörld".as_bytes()));
        let mut text = "héllo ".to_string();
        text.push_str(&"w".repeat(3000));
        text.push_str("wörld");
        let mut expected = codec::encode(OpCode::Pong, b"p");
        expected.extend(codec::encode(OpCode::Text, text.as_bytes()));
        for capacity in [256, 4096] {
            assert_eq!(converse(&input, capacity).0, expected);
        }
    }

    #[test]
    fn violations_close_with_their_codes() {
        let bad_utf8 = client_frame(true, 1, &[0xff, 0xfe]);
        assert_eq!(converse(&bad_utf8, 4096).2, Some(1007));
        let orphan = client_frame(true, 0, b"x");
        assert_eq!(converse(&orphan, 4096).2, Some(1002));
        let mut interleaved = client_frame(false, 2, b"x");
        interleaved.extend(client_frame(true, 2, b"y"));
        assert_eq!(converse(&interleaved, 4096).2, Some(1002));
        let too_big = client_frame(true, 2, &vec![0; (1 << 20) + 1]);
        assert_eq!(converse(&too_big[..100], 4096).2, Some(1009));
        let (sent, phase, code) = converse(&client_frame(true, 8, &[]), 4096);
        assert_eq!((phase, code), (Phase::Done, Some(1005)));
        assert_eq!(
            sent,
            codec::encode_close(1000, ""),
            "no code: answered 1000"
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        // The bad byte is in the first of three fragments; the rest never
        // needs to arrive for the verdict.
        let mut input = client_frame(false, 1, &[b'a', 0xff]);
        input.extend(client_frame(false, 0, b"b"));
        let (sent, _, code) = converse(&input, 4096);
        assert_eq!(code, Some(1007));
        assert_eq!(sent, codec::encode_close(1007, "invalid UTF-8"));
        // A character split across fragments is fine.
        let euro = "€".as_bytes();
        let mut input = client_frame(false, 1, &euro[..1]);
        input.extend(client_frame(false, 0, &euro[1..2]));
        input.extend(client_frame(true, 0, &euro[2..]));
        assert_eq!(converse(&input, 4096).0, codec::encode(OpCode::Text, euro));
        // A frame larger than the buffer fails at the read that brings the
        // bad byte, while later reads are still to come.
        let mut big = vec![b'x'; 1000];
        big[300] = 0xff;
        let frame = client_frame(true, 1, &big);
        assert_eq!(converse(&frame[..600], 256).2, Some(1007));
    }

    #[test]
    fn after_a_violation_only_the_clients_close_matters() {
        let mut input = client_frame(true, 1, &[0xff]);
        input.extend(client_frame(true, 2, b"ignored"));
        input.extend(client_frame(true, 8, &1002u16.to_be_bytes()));
        let (sent, phase, code) = converse(&input, 4096);
        assert_eq!(sent, codec::encode_close(1007, "invalid UTF-8"));
        assert_eq!((phase, code), (Phase::Done, Some(1007)));
    }
}

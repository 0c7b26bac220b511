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

use crate::codec::{self, Header, Utf8Check, Violation};
use crate::deflate::{Agreed, Contexts};
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
    /// The server failed the connection in the middle of a frame, so where
    /// the client's next frame starts is unknown (a client answers a close
    /// at once, without finishing the frame it was sending). After our
    /// close the driver shuts down its side, so that the client sees EOF at
    /// once, and reads to the client's EOF, discarding, to spare it a reset.
    Draining,
    /// The close handshake is over (or cannot happen): close the socket.
    Done,
}

/// A message being reassembled from fragments or from several reads.
struct Message {
    opcode: OpCode,
    /// `MAX_SERVER_HEADER` reserved bytes, then the unmasked payload so far.
    data: Vec<u8>,
    /// Text is checked as it arrives, so that invalid UTF-8 fails the
    /// connection at once rather than when the message ends.
    utf8: Utf8Check,
    /// RSV1 on its first frame: `data` holds DEFLATE data, checked once
    /// inflated.
    compressed: bool,
}

/// The text checked so far of an incomplete frame at the front of the
/// receive buffer, one that will be handled in place once the rest arrives.
/// Its bytes are checked as each read brings them, so that a frame sent in
/// chops fails at the chop that made it invalid.
struct Peek {
    /// Identifies the frame, so that a stale peek is never applied to the
    /// next one.
    mask: [u8; 4],
    payload_len: u64,
    /// Payload bytes checked so far.
    checked: usize,
    utf8: Utf8Check,
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

    /// The worker's counters.
    fn stats(&self) -> &WorkerStats;

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

    fn stats(&self) -> &WorkerStats {
        (**self).stats()
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

    fn stats(&self) -> &WorkerStats {
        self.stats
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
pub struct Session<H: Handler> {
    handler: H,
    /// Receive buffer size: frames up to this size are handled in place.
    capacity: usize,
    max_message: u64,
    phase: Phase,
    message: Option<Message>,
    spanning: Option<Spanning>,
    peek: Option<Peek>,
    /// permessage-deflate, when agreed in the handshake.
    deflate: Option<Box<Contexts>>,
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
            peek: None,
            deflate: None,
            close_code: None,
        }
    }

    /// permessage-deflate was agreed in the handshake.
    pub fn set_deflate(&mut self, agreed: Agreed) {
        if self.deflate.is_none() {
            self.handler.stats().deflate_sessions.add(1);
        }
        self.deflate = Some(Box::new(Contexts::new(agreed)));
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
        if self.phase == Phase::Draining {
            return buf.len();
        }
        while pos < buf.len() && !matches!(self.phase, Phase::Done | Phase::Draining) {
            if self.spanning.is_some() {
                pos += self.continue_spanning(&mut buf[pos..], out);
                continue;
            }
            if self.phase == Phase::Closing {
                match self.skip_while_closing(buf, pos, out) {
                    Some(n) => {
                        pos += n;
                        continue;
                    }
                    None => break,
                }
            }
            let assembled = self.message.as_ref().map_or(0, |m| payload_len(&m.data));
            let limit = self.max_message.saturating_sub(assembled);
            let header = match codec::parse_header(&buf[pos..], limit, self.deflate.is_some()) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(violation) => {
                    self.fail(violation, out);
                    let whole = codec::frame_extent(&buf[pos..]).is_ok_and(|extent| {
                        extent.is_some_and(|e| {
                            e.len as u64 + e.payload_len <= (buf.len() - pos) as u64
                        })
                    });
                    if !whole {
                        self.drain();
                    }
                    continue;
                }
            };
            let available = (buf.len() - pos) as u64;
            let step = if header.frame_len() <= available {
                self.peek = None;
                let payload = pos + header.len..pos + header.frame_len() as usize;
                self.on_frame(&header, buf, payload, out)
                    .map(|()| header.frame_len() as usize)
            } else if header.frame_len() <= self.capacity as u64 {
                // Handled in place once the rest arrives; text is checked now.
                match self.peek_text(&header, &buf[pos + header.len..]) {
                    Ok(()) => break,
                    Err(violation) => Err(violation),
                }
            } else {
                self.peek = None;
                self.begin_spanning(&header).map(|()| header.len)
            };
            match step {
                Ok(n) => pos += n,
                Err(violation) => {
                    self.fail(violation, out);
                    // A whole frame is looked at again, now as one to skip;
                    // a frame whose rest is still to come cannot be.
                    if header.frame_len() > available {
                        self.drain();
                    }
                }
            }
        }
        if matches!(self.phase, Phase::Done | Phase::Draining) {
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
        // Only while open, and for the client's close after ours: everything
        // else is skipped while closing (`skip_while_closing`).
        // Payloads used where they are are unmasked in place; fragments of
        // a message are unmasked as they are copied into it; ignored ones
        // are left as they came.
        let unmask = |buf: &mut [u8]| codec::unmask_at(&mut buf[payload.clone()], h.mask, 0);
        match h.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(Violation::Protocol("new message before the last one ended"));
                }
                if !h.fin || h.compressed {
                    // Compressed messages are inflated whole, once assembled.
                    let mut message = Message::start(h.opcode, h.payload_len, h.compressed);
                    message.append(&buf[payload], h.mask, 0)?;
                    self.message = Some(message);
                    if h.fin {
                        self.finish_message(out)?;
                    }
                    return Ok(());
                }
                unmask(buf);
                if h.opcode == OpCode::Text && !codec::is_utf8(&buf[payload.clone()]) {
                    return Err(Violation::InvalidUtf8);
                }
                self.handler.on_message(h.opcode, buf, payload, out)
            }
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

    /// Checks the text of an incomplete frame as far as it has arrived.
    fn peek_text(&mut self, h: &Header, arrived: &[u8]) -> Result<(), Violation> {
        let utf8 = match (h.opcode, &self.message) {
            (OpCode::Text, None) if !h.compressed => Utf8Check::default(),
            (OpCode::Continuation, Some(m)) if m.opcode == OpCode::Text && !m.compressed => m.utf8,
            _ => return Ok(()), // binary, or an error found once it is whole
        };
        let peek = match &mut self.peek {
            Some(p) if p.mask == h.mask && p.payload_len == h.payload_len => p,
            stale => stale.insert(Peek {
                mask: h.mask,
                payload_len: h.payload_len,
                checked: 0,
                utf8,
            }),
        };
        let mut chunk = [0u8; 256];
        for piece in arrived[peek.checked..].chunks(chunk.len()) {
            let chunk = &mut chunk[..piece.len()];
            chunk.copy_from_slice(piece);
            codec::unmask_at(chunk, h.mask, peek.checked as u64);
            peek.utf8.feed(chunk)?;
            peek.checked += piece.len();
        }
        Ok(())
    }

    /// After the engine sent its close: skips the frame at `pos` unread,
    /// unless it is the client's close. Returns the bytes consumed, or `None`
    /// when more are needed.
    fn skip_while_closing(
        &mut self,
        buf: &mut [u8],
        pos: usize,
        out: &mut Vec<Out>,
    ) -> Option<usize> {
        let extent = match codec::frame_extent(&buf[pos..]) {
            Ok(Some(extent)) => extent,
            Ok(None) => return None,
            Err(_) => {
                // Nothing can be skipped past this.
                self.phase = Phase::Draining;
                return None;
            }
        };
        let available = (buf.len() - pos) as u64;
        let frame_len = extent.len as u64 + extent.payload_len;
        if extent.opcode == OpCode::Close as u8 {
            if frame_len > available {
                if frame_len > self.capacity as u64 {
                    // No valid close is that long.
                    self.phase = Phase::Draining;
                }
                return None;
            }
            let header = Header {
                fin: extent.fin,
                opcode: OpCode::Close,
                mask: extent.mask,
                len: extent.len,
                payload_len: extent.payload_len,
                compressed: false,
            };
            let payload = pos + extent.len..pos + frame_len as usize;
            // Any answer to a close after ours is only recorded.
            let _ = self.on_frame(&header, buf, payload, out);
            self.phase = Phase::Done;
            return Some(frame_len as usize);
        }
        if frame_len <= available {
            return Some(frame_len as usize);
        }
        self.spanning = Some(Spanning {
            fin: extent.fin,
            mask: extent.mask,
            offset: 0,
            remaining: extent.payload_len,
            discard: true,
        });
        Some(extent.len)
    }

    fn begin_spanning(&mut self, h: &Header) -> Result<(), Violation> {
        match (h.opcode, &self.message) {
            (OpCode::Continuation, None) => {
                return Err(Violation::Protocol("continuation frame without a message"))
            }
            (OpCode::Continuation, Some(_)) => {}
            (_, Some(_)) => {
                return Err(Violation::Protocol("new message before the last one ended"))
            }
            (opcode, None) => {
                self.message = Some(Message::start(opcode, h.payload_len, h.compressed))
            }
        }
        self.spanning = Some(Spanning {
            fin: h.fin,
            mask: h.mask,
            offset: 0,
            remaining: h.payload_len,
            discard: false,
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
                let cut_short = span.remaining > take as u64;
                self.fail(violation, out);
                if cut_short {
                    self.drain();
                    return buf.len();
                }
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
        if message.compressed {
            return self.finish_compressed(message, out);
        }
        if message.opcode == OpCode::Text {
            message.utf8.finish()?; // ends inside a character
        }
        self.handler.on_assembled(message.opcode, message.data, out)
    }

    /// Inflates a compressed message, hands it to the handler, and
    /// compresses the handler's answers: a compressed message gets
    /// compressed replies (broadcasts and control frames go out as they are).
    fn finish_compressed(&mut self, message: Message, out: &mut Vec<Out>) -> Result<(), Violation> {
        let contexts = self
            .deflate
            .as_mut()
            .expect("RSV1 is refused unless deflate was agreed");
        let held = contexts.bytes();
        let compressed = &message.data[codec::MAX_SERVER_HEADER..];
        // A guess at the inflated size, never above the limit: the
        // inflater grows the buffer, up to one byte past the limit.
        let guess = (compressed.len() * 4).min(self.max_message as usize + 1);
        let mut data = out::frame_buffer(codec::MAX_SERVER_HEADER + guess);
        data.resize(codec::MAX_SERVER_HEADER, 0);
        let inflated = contexts.inflate(compressed, &mut data, self.max_message as usize);
        let mut spent = vec![Out::Owned(message.data, 0)];
        out::recycle(&mut spent);
        self.account(held);
        inflated?;
        if message.opcode == OpCode::Text && !codec::is_utf8(&data[codec::MAX_SERVER_HEADER..]) {
            return Err(Violation::InvalidUtf8);
        }
        let mark = out.len();
        self.handler.on_assembled(message.opcode, data, out)?;
        let contexts = self.deflate.as_mut().expect("deflate agreed");
        let held = contexts.bytes();
        for piece in &mut out[mark..] {
            let Out::Owned(frame, start) = piece else {
                continue; // not produced for assembled messages
            };
            let Some(compressed) = compress_frame(contexts, &frame[*start..]) else {
                continue;
            };
            let plain = std::mem::replace(piece, compressed);
            out::recycle(&mut vec![plain]);
        }
        self.account(held);
        Ok(())
    }

    /// Brings /stats up to date with the context memory this session holds.
    fn account(&self, held_before: u64) {
        let now = self.deflate.as_ref().map_or(0, |d| d.bytes());
        let gauge = &self.handler.stats().deflate_context_bytes;
        if now > held_before {
            gauge.add(now - held_before);
        } else {
            gauge.sub(held_before - now);
        }
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
        self.peek = None;
        self.spanning = None;
        if self.phase == Phase::Open {
            self.phase = Phase::Closing;
        }
    }

    /// After [`Session::fail`] in the middle of a frame: see [`Phase::Draining`].
    fn drain(&mut self) {
        if self.phase == Phase::Closing {
            self.phase = Phase::Draining;
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

impl<H: Handler> Drop for Session<H> {
    fn drop(&mut self) {
        if let Some(contexts) = &self.deflate {
            let stats = self.handler.stats();
            stats.deflate_sessions.sub(1);
            stats.deflate_context_bytes.sub(contexts.bytes());
        }
    }
}

/// The compressed form of one unmasked server data frame (RSV1 set), or
/// `None` for a control frame, which is never compressed.
fn compress_frame(contexts: &mut Contexts, frame: &[u8]) -> Option<Out> {
    let opcode = OpCode::try_from(frame[0] & 0x0F).ok()?;
    if codec::Header::is_control_opcode(opcode) {
        return None;
    }
    let header = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let payload = &frame[header..];
    let mut data = out::frame_buffer(codec::MAX_SERVER_HEADER + payload.len() / 2 + 64);
    data.resize(codec::MAX_SERVER_HEADER, 0);
    contexts.deflate(payload, &mut data);
    let len = data.len();
    let range = codec::write_header_before(&mut data, codec::MAX_SERVER_HEADER..len, opcode);
    data[range.start] |= 0x40; // RSV1: a compressed message
    Some(Out::Owned(data, range.start))
}

impl Message {
    fn start(opcode: OpCode, frame_len: u64, compressed: bool) -> Self {
        let reserve = codec::MAX_SERVER_HEADER + frame_len.min(ASSEMBLY_RESERVE) as usize;
        let mut data = out::frame_buffer(reserve);
        data.resize(codec::MAX_SERVER_HEADER, 0);
        Message {
            opcode,
            data,
            utf8: Utf8Check::default(),
            compressed,
        }
    }

    /// Appends a piece of a frame's payload, still masked, that starts at
    /// `offset` of that payload.
    fn append(&mut self, masked: &[u8], mask: [u8; 4], offset: u64) -> Result<(), Violation> {
        let start = self.data.len();
        codec::unmask_into(&mut self.data, masked, mask, offset);
        if self.opcode == OpCode::Text && !self.compressed {
            self.utf8.feed(&self.data[start..])?;
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
        converse_in_reads_of(input, capacity, capacity)
    }

    /// As [`converse`], with reads of at most `read` bytes, as a client that
    /// sends its frames in chops makes them.
    fn converse_in_reads_of(
        input: &[u8],
        capacity: usize,
        read: usize,
    ) -> (Vec<u8>, Phase, Option<u16>) {
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
            let n = (capacity - filled).min(input.len()).min(read);
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

    fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        client_frame(true, 8, &payload)
    }

    /// RFC 6455 §5.5.1, §7.1.1: once the engine has sent and received a
    /// close, the conversation is over, whatever the failed frame was; the
    /// driver closes the TCP connection at once. Frames the engine failed on
    /// are skipped by their length, so the client's close behind them is read.
    #[test]
    fn after_any_violation_the_clients_close_ends_the_conversation() {
        let mut rsv = client_frame(true, 2, b"abc");
        rsv[0] |= 0x40;
        let mut unmasked = codec::encode(OpCode::Binary, b"abc");
        unmasked[0] = 0x82;
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            (
                "ping over 125 bytes",
                client_frame(true, 9, &[7; 126]),
                1002,
            ),
            ("reserved bits", rsv, 1002),
            ("reserved data opcode", client_frame(true, 3, b"abc"), 1002),
            (
                "reserved control opcode",
                client_frame(true, 0xB, b"abc"),
                1002,
            ),
            ("fragmented ping", client_frame(false, 9, b"abc"), 1002),
            (
                "close reason over 123 bytes",
                close_frame(1000, &[b'a'; 124]),
                1002,
            ),
            ("unmasked frame", unmasked, 1002),
            (
                "message too big",
                client_frame(true, 2, &vec![0; (1 << 20) + 1]),
                1009,
            ),
            (
                "invalid UTF-8",
                client_frame(true, 1, &[0xce, 0xba, 0xff]),
                1007,
            ),
        ];
        for (class, bad, code) in cases {
            for capacity in [256, 4096] {
                let mut input = bad.clone();
                input.extend(client_frame(true, 2, b"after the violation"));
                input.extend(close_frame(code, b""));
                let (sent, phase, recorded) = converse(&input, capacity);
                // A frame whose rest was still to come leaves the stream
                // without frame boundaries: the driver half-closes instead.
                let cut_short = bad.len() > capacity;
                let expected = if cut_short {
                    Phase::Draining
                } else {
                    Phase::Done
                };
                assert_eq!(phase, expected, "{class}, capacity {capacity}");
                assert_eq!(recorded, Some(code), "{class}");
                let reason = match code {
                    1007 => "invalid UTF-8".to_string(),
                    1009 => "message too big".to_string(),
                    _ => String::from_utf8_lossy(&sent[4..]).to_string(),
                };
                assert_eq!(sent, codec::encode_close(code, &reason), "{class}");
            }
        }
    }

    #[test]
    fn after_a_length_with_its_top_bit_set_only_draining_is_left() {
        let mut input = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
        input.extend(close_frame(1002, b""));
        let (sent, phase, code) = converse(&input, 4096);
        assert_eq!((phase, code), (Phase::Draining, Some(1002)));
        assert_eq!((sent[0], &sent[2..4]), (0x88, &1002u16.to_be_bytes()[..]));
    }

    /// Autobahn 6.4.3 and 6.4.4: one text frame, sent in chops; the verdict
    /// comes at the chop with the bad byte, not when the frame is whole.
    #[test]
    fn invalid_utf8_in_a_frame_sent_in_chops_fails_at_the_bad_chop() {
        // κόσμε, then a byte that no UTF-8 text can contain, then more.
        let mut text = "κόσμε".as_bytes().to_vec();
        let bad_at = text.len();
        text.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
        text.extend_from_slice("edited".as_bytes());
        let frame = client_frame(true, 1, &text);
        let header = frame.len() - text.len();
        // Everything up to the byte that makes the text invalid (0x90 after
        // 0xf4: above U+10FFFF), in 1-byte reads: no verdict yet.
        let (sent, phase, _) = converse_in_reads_of(&frame[..header + bad_at + 1], 4096, 1);
        assert!(sent.is_empty());
        assert_eq!(phase, Phase::Open);
        // One byte more, and the connection fails, the rest still to come.
        let (sent, _, code) = converse_in_reads_of(&frame[..header + bad_at + 2], 4096, 1);
        assert_eq!(code, Some(1007));
        assert_eq!(sent, codec::encode_close(1007, "invalid UTF-8"));
        // The same in a continuation frame, after a valid first fragment.
        let mut input = client_frame(false, 1, "ab".as_bytes());
        let cont = client_frame(true, 0, &text);
        input.extend_from_slice(&cont[..cont.len() - text.len() + bad_at + 2]);
        assert_eq!(converse_in_reads_of(&input, 4096, 1).2, Some(1007));
        // Valid text in 1-byte reads still comes back whole.
        let fine = "κόσμε €".as_bytes();
        let (sent, _, code) = converse_in_reads_of(&client_frame(true, 1, fine), 4096, 1);
        assert_eq!((sent, code), (codec::encode(OpCode::Text, fine), None));
    }
}

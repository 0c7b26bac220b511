//! The RFC 6455 frame codec, over buffers we own.
//!
//! fastwebsockets' `read_frame` copies every payload into a fresh buffer, so
//! the engine parses client frame headers itself and uses fastwebsockets'
//! types (`OpCode`, `Frame::fmt_head`, `CloseCode`) and its SIMD `unmask` on
//! the memory the kernel filled. A masked client header is always 4 bytes
//! longer than the unmasked server header for the same payload, so the echo's
//! header is written over the tail of the client's header, right before the
//! payload, and header and payload leave from that same memory.

use std::ops::Range;

use fastwebsockets::{CloseCode, Frame, OpCode, Payload};

/// Longest client frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// Longest server frame header (no mask).
pub const MAX_SERVER_HEADER: usize = 10;
/// RFC 6455 §5.5: control frame payloads are at most 125 bytes.
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    /// Bytes of header, mask included: where the payload starts.
    pub len: usize,
    pub payload_len: u64,
    /// RSV1: the first frame of a compressed message (permessage-deflate).
    pub compressed: bool,
}

impl Header {
    pub fn frame_len(&self) -> u64 {
        self.len as u64 + self.payload_len
    }

    pub fn is_control(&self) -> bool {
        is_control(self.opcode)
    }

    pub fn is_control_opcode(opcode: OpCode) -> bool {
        is_control(opcode)
    }
}

/// Why a connection must be failed, and with which close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// 1002: the peer broke the framing rules.
    Protocol(&'static str),
    /// 1007: a text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// 1007: a compressed message that does not inflate.
    BadData(&'static str),
    /// 1009: a message over --max-message-size.
    TooBig,
    /// 1008: the client broke a policy (it let too much output pile up).
    Policy(&'static str),
    /// 1000: the conversation above WebSocket ended (a hub Close, a failed
    /// hub handshake); whatever it had to say was sent before.
    Ended(&'static str),
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::InvalidUtf8 | Violation::BadData(_) => 1007,
            Violation::TooBig => 1009,
            Violation::Policy(_) => 1008,
            Violation::Ended(_) => 1000,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(why)
            | Violation::Ended(why)
            | Violation::Policy(why)
            | Violation::BadData(why) => why,
            Violation::InvalidUtf8 => "invalid UTF-8",
            Violation::TooBig => "message too big",
        }
    }
}

/// Parses a client frame header at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. `max_payload` is checked as
/// soon as the length is known, before anything of that size is allocated.
/// `deflate`: permessage-deflate was agreed, so RSV1 may mark a message's
/// first frame as compressed (RFC 7692 §6).
pub fn parse_header(
    buf: &[u8],
    max_payload: u64,
    deflate: bool,
) -> Result<Option<Header>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let reserved = if deflate { 0x30 } else { 0x70 };
    if b0 & reserved != 0 {
        return Err(Violation::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode = OpCode::try_from(b0 & 0x0F).map_err(|_| Violation::Protocol("unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol("client frame not masked"));
    }
    let short = (b1 & 0x7F) as u64;
    let control = is_control(opcode);
    let compressed = b0 & 0x40 != 0;
    if compressed && (control || opcode == OpCode::Continuation) {
        return Err(Violation::Protocol(
            "RSV1 on a control frame or a continuation",
        ));
    }
    if control && !fin {
        return Err(Violation::Protocol("fragmented control frame"));
    }
    if control && short > MAX_CONTROL_PAYLOAD {
        return Err(Violation::Protocol("control frame over 125 bytes"));
    }
    let (extra, payload_len) = match short {
        126 => match buf.get(2..4) {
            Some(b) => (2, u16::from_be_bytes([b[0], b[1]]) as u64),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(Violation::Protocol("frame length has its top bit set"));
                }
                (8, n)
            }
            None => return Ok(None),
        },
        n => (0, n),
    };
    if payload_len > max_payload {
        return Err(Violation::TooBig);
    }
    let len = 2 + extra + 4;
    let Some(mask) = buf.get(len - 4..len) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: mask.try_into().expect("4 bytes"),
        len,
        payload_len,
        compressed,
    }))
}

/// Where a frame ends, read from its first bytes without judging them: after
/// the engine failed a connection it skips whatever the client still sends,
/// reserved bits, unknown opcodes and oversized control frames included,
/// until the client's close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub fin: bool,
    /// The 4-bit opcode as sent, reserved values included.
    pub opcode: u8,
    /// All zeros for an unmasked frame (which the engine does not accept,
    /// but still skips).
    pub mask: [u8; 4],
    pub len: usize,
    pub payload_len: u64,
}

/// Reads the extent of the frame at the start of `buf`: `Ok(None)` until its
/// header is complete; an error when its length has the top bit set (no such
/// frame can be skipped).
pub fn frame_extent(buf: &[u8]) -> Result<Option<Extent>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (extra, payload_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (2, u16::from_be_bytes([b[0], b[1]]) as u64),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(Violation::Protocol("frame length has its top bit set"));
                }
                (8, n)
            }
            None => return Ok(None),
        },
        n => (0, n as u64),
    };
    let masked = b1 & 0x80 != 0;
    let len = 2 + extra + if masked { 4 } else { 0 };
    if buf.len() < len {
        return Ok(None);
    }
    let mask = if masked {
        buf[len - 4..len].try_into().expect("4 bytes")
    } else {
        [0; 4]
    };
    Ok(Some(Extent {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        len,
        payload_len,
    }))
}

/// UTF-8 checked as it arrives, in pieces cut anywhere: fails at the first
/// byte after which no continuation could make the text valid (RFC 6455
/// §8.1: fail as soon as the sequence cannot be valid), not when the message
/// ends. Holds at most the three bytes of a character cut between pieces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Check {
    cut: [u8; 4],
    cut_len: u8,
}

impl Utf8Check {
    /// Checks the next piece of the text.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        if self.cut_len > 0 {
            // Complete the character cut at the end of the last piece; its
            // first byte was valid, so it says how long the character is.
            let width = match self.cut[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let have = self.cut_len as usize;
            let take = (width - have).min(bytes.len());
            self.cut[have..have + take].copy_from_slice(&bytes[..take]);
            self.cut_len += take as u8;
            bytes = &bytes[take..];
            match simdutf8::compat::from_utf8(&self.cut[..self.cut_len as usize]) {
                Ok(_) => self.cut_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()), // still cut; bytes is empty
                Err(_) => return Err(Violation::InvalidUtf8),
            }
        }
        match simdutf8::compat::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.cut[..tail.len()].copy_from_slice(tail);
                self.cut_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Violation::InvalidUtf8),
        }
    }

    /// Checks that the text does not end inside a character.
    pub fn finish(&self) -> Result<(), Violation> {
        match self.cut_len {
            0 => Ok(()),
            _ => Err(Violation::InvalidUtf8),
        }
    }
}

fn is_control(opcode: OpCode) -> bool {
    matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong)
}

/// Length of an unmasked server header for `payload_len` bytes.
pub fn server_header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// The payload of a whole unmasked server frame.
pub fn server_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7F) {
        None => return &[],
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
    };
    frame.get(header..).unwrap_or(&[])
}

/// Writes a final, unmasked server header for the payload at `payload` just
/// before it in `buf`, and returns the range of the whole frame. The caller
/// guarantees room: the client's header, 4 bytes longer, was there.
pub fn write_header_before(buf: &mut [u8], payload: Range<usize>, opcode: OpCode) -> Range<usize> {
    let start = payload.start - server_header_len(payload.len());
    let (head, body) = buf.split_at_mut(payload.start);
    let body = &body[..payload.len()];
    Frame::new(true, opcode, None, Payload::Borrowed(body)).fmt_head(&mut head[start..]);
    start..payload.end
}

/// The mask as it applies from byte `offset` of a frame's payload on.
fn rotate(mask: [u8; 4], offset: u64) -> [u8; 4] {
    let r = (offset % 4) as usize;
    [
        mask[r],
        mask[(r + 1) % 4],
        mask[(r + 2) % 4],
        mask[(r + 3) % 4],
    ]
}

/// Unmasks `payload`, whose first byte sits at offset `offset` of its frame's
/// payload (frames longer than a receive buffer are unmasked in pieces).
pub fn unmask_at(payload: &mut [u8], mask: [u8; 4], offset: u64) {
    fastwebsockets::unmask(payload, rotate(mask, offset));
}

/// Appends `masked`, unmasked, to `dst`: the assembly of a message that
/// spans receive buffers or frames, in one pass that reads the receive buffer
/// and writes the message. Unmasking in place and then `extend_from_slice`
/// would pass over the bytes twice, and glibc's `memcpy` (`rep movsb` from
/// 2-4 KiB up) ran at about 2 GiB/s on the AMD EPYC we measure on: 30 % of
/// the engine's CPU at 10 × 16 KiB with 4 KiB buffers (results/frames.md,
/// results/profile-io-uring.md).
pub fn unmask_into(dst: &mut Vec<u8>, masked: &[u8], mask: [u8; 4], offset: u64) {
    let key = rotate(mask, offset);
    // 8 is a multiple of 4: every word starts at the same phase of the key.
    let key8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    dst.reserve(masked.len());
    let start = dst.len();
    let spare = &mut dst.spare_capacity_mut()[..masked.len()];
    let mut words = masked.chunks_exact(8);
    let mut out = spare.chunks_exact_mut(8);
    for (o, w) in (&mut out).zip(&mut words) {
        let word = u64::from_ne_bytes(w.try_into().expect("8 bytes")) ^ key8;
        for (d, b) in o.iter_mut().zip(word.to_ne_bytes()) {
            d.write(b);
        }
    }
    let tail = words.remainder();
    for (i, (d, &b)) in out.into_remainder().iter_mut().zip(tail).enumerate() {
        d.write(b ^ key[i % 4]);
    }
    // SAFETY: the loops above wrote all `masked.len()` bytes after `start`,
    // within the capacity reserved for them.
    unsafe { dst.set_len(start + masked.len()) };
}

/// An unmasked server frame in a new buffer (pings, closes: the cold path).
pub fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_SERVER_HEADER + payload.len());
    let len = Frame::new(true, opcode, None, Payload::Borrowed(payload))
        .write(&mut out)
        .len();
    // `write` sizes the buffer for the longest header; keep only the frame.
    out.truncate(len);
    out
}

/// A frame as a client sends it, masked with `mask`; `opcode` is the raw
/// 4-bit value, so that tests can send reserved ones. The engine never sends
/// one: tests, benchmarks and fuzz seeds use it.
pub fn encode_masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(fin as u8) << 7 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A close frame with `code` and a short reason.
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(OpCode::Close, &payload)
}

/// Reads the status code of an (unmasked) close payload, checking it as
/// RFC 6455 §5.5.1 and §7.4 require. `None`: the client sent no code.
pub fn parse_close(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(Violation::Protocol("invalid close code"));
            }
            if !is_utf8(reason) {
                return Err(Violation::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

pub fn is_utf8(bytes: &[u8]) -> bool {
    Frame::text(Payload::Borrowed(bytes)).is_utf8()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::encode_masked as client_frame;

    #[test]
    fn echo_header_fits_in_front_of_the_payload_for_every_length_class() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = client_frame(true, 2, &payload, [1, 2, 3, 4]);
            let h = parse_header(&buf, u64::MAX, false).unwrap().unwrap();
            assert_eq!(h.payload_len as usize, len);
            let body = h.len..h.len + len;
            unmask_at(&mut buf[body.clone()], h.mask, 0);
            let frame = write_header_before(&mut buf, body, OpCode::Binary);
            assert_eq!(
                frame.start, 4,
                "server header ends where the payload starts"
            );
            let expected = encode(OpCode::Binary, &payload);
            assert_eq!(&buf[frame], &expected[..]);
        }
    }

    #[test]
    fn headers_split_anywhere_ask_for_more() {
        let buf = client_frame(true, 1, &[b'x'; 300], [9, 8, 7, 6]);
        for cut in 0..8 {
            assert_eq!(
                parse_header(&buf[..cut], u64::MAX, false),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(parse_header(&buf[..8], u64::MAX, false).unwrap().is_some());
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_whole() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let frame = client_frame(true, 2, &payload, [0xA1, 0xB2, 0xC3, 0xD4]);
        let mut body = frame[8..].to_vec();
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let (a, rest) = body.split_at_mut(333);
        unmask_at(a, mask, 0);
        let (b, c) = rest.split_at_mut(2);
        unmask_at(b, mask, 333);
        unmask_at(c, mask, 335);
        assert_eq!(body, payload);
    }

    #[test]
    fn unmasking_into_a_message_in_pieces_equals_unmasking_whole() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 13 + 5) as u8).collect();
        let mask = [0x0F, 0xF0, 0x55, 0xAA];
        let frame = client_frame(true, 2, &payload, mask);
        let body = &frame[frame.len() - payload.len()..];
        // Pieces of every phase of the key and tails of every length.
        for cuts in [
            &[0, 5000][..],
            &[0, 1, 9, 16, 4000, 4003, 5000],
            &[0, 7, 15, 22, 4999, 5000],
        ] {
            let mut message = vec![0xEE; 3];
            for piece in cuts.windows(2) {
                unmask_into(
                    &mut message,
                    &body[piece[0]..piece[1]],
                    mask,
                    piece[0] as u64,
                );
            }
            assert_eq!(message[..3], [0xEE; 3]);
            assert_eq!(message[3..], payload[..], "cut at {cuts:?}");
        }
    }

    #[test]
    fn violations_carry_the_rfc_close_codes() {
        let m = [1, 2, 3, 4];
        let mut rsv = client_frame(true, 2, b"a", m);
        rsv[0] |= 0x40;
        assert_eq!(
            parse_header(&rsv, 100, false).unwrap_err().close_code(),
            1002
        );
        let unknown = client_frame(true, 3, b"a", m);
        assert_eq!(
            parse_header(&unknown, 100, false).unwrap_err().close_code(),
            1002
        );
        let mut unmasked = client_frame(true, 2, b"a", m);
        unmasked[1] &= 0x7F;
        assert_eq!(
            parse_header(&unmasked, 100, false)
                .unwrap_err()
                .close_code(),
            1002
        );
        let fragmented_ping = client_frame(false, 9, b"a", m);
        assert_eq!(
            parse_header(&fragmented_ping, 100, false)
                .unwrap_err()
                .close_code(),
            1002
        );
        let big_ping = client_frame(true, 9, &[0; 126], m);
        assert_eq!(
            parse_header(&big_ping, 1000, false)
                .unwrap_err()
                .close_code(),
            1002
        );
        let big = client_frame(true, 2, &[0; 101], m);
        assert_eq!(parse_header(&big, 100, false), Err(Violation::TooBig));
        // The size check needs only the length bytes, not the payload.
        assert_eq!(parse_header(&big[..2], 100, false), Err(Violation::TooBig));
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(parse_close(&[3]).unwrap_err().close_code(), 1002);
        assert_eq!(parse_close(&1000u16.to_be_bytes()), Ok(Some(1000)));
        assert_eq!(parse_close(&4999u16.to_be_bytes()), Ok(Some(4999)));
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(parse_close(&bad.to_be_bytes()).is_err(), "{bad}");
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(parse_close(&bad_reason), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn utf8_checked_in_pieces_agrees_with_checking_whole() {
        let samples: [&[u8]; 8] = [
            "κόσμε €𝄞".as_bytes(),
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
            ],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xe0, 0x80, 0xaf],
            &[0xc0, 0xaf],
            &[0xf0, 0x9d, 0x84],
            &[0x80],
            b"plain ascii",
        ];
        for text in samples {
            let whole = std::str::from_utf8(text).is_ok();
            for piece in 1..=text.len().max(1) {
                let mut check = Utf8Check::default();
                let fed = text
                    .chunks(piece)
                    .try_for_each(|p| check.feed(p))
                    .and_then(|()| check.finish());
                assert_eq!(fed.is_ok(), whole, "{text:?} in pieces of {piece}");
            }
        }
        // The verdict comes at the first byte that cannot lead anywhere.
        let mut check = Utf8Check::default();
        assert!(check.feed(&[0xf4]).is_ok());
        assert!(check.feed(&[0x90]).is_err());
    }

    #[test]
    fn extents_are_read_from_any_header() {
        let mut rsv = client_frame(true, 3, &[0; 300], [1, 2, 3, 4]);
        rsv[0] |= 0x70;
        let extent = frame_extent(&rsv).unwrap().unwrap();
        assert_eq!((extent.opcode, extent.len, extent.payload_len), (3, 8, 300));
        assert_eq!(frame_extent(&rsv[..7]), Ok(None));
        let unmasked = encode(OpCode::Ping, b"abc");
        let extent = frame_extent(&unmasked).unwrap().unwrap();
        assert_eq!(
            (extent.len, extent.payload_len, extent.mask),
            (2, 3, [0; 4])
        );
        let top_bit = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert!(frame_extent(&top_bit).is_err());
    }
}

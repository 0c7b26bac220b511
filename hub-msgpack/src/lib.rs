//! The SignalR hub protocol's MessagePack encoding, for both ends (the
//! engine's hub and loadgen's client): each message a
//! MessagePack array (`[1, Headers, InvocationId, Target, [Arguments],
//! [StreamIds]]` for an Invocation, `[3, Headers, InvocationId, ResultKind,
//! Result?]` for a Completion, `[6]` a Ping, `[7, Error, AllowReconnect]` a
//! Close), framed in binary WebSocket messages by a VarInt length before
//! each.
//!
//! Reading finds the fields the hub needs and keeps each argument as the
//! bytes it arrived as, so an Echo's result is copied, never decoded and
//! encoded again; the markers are the `rmp` crate's. Skipping a value is a
//! loop over a count of values still to skip, not recursion, so a deeply
//! nested argument cannot exhaust the stack.

use rmp::Marker;
use smallvec::SmallVec;

/// Why a message could not be read.
pub type Malformed = &'static str;

/// What [`split`] says of a message over its maximum.
pub const TOO_LARGE: Malformed = "message too large";

/// The longest VarInt length prefix: 5 bytes hold 2^35 − 1.
const MAX_PREFIX: usize = 5;

/// The fields of a hub message the engine reads.
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    pub kind: u8,
    pub invocation_id: Option<&'a str>,
    pub target: Option<&'a str>,
    /// Each argument's MessagePack bytes, as they arrived.
    pub arguments: SmallVec<[&'a [u8]; 2]>,
    /// A Completion's outcome.
    pub completion: Option<Completion<'a>>,
}

/// How an invocation ended, as a Completion says.
#[derive(Debug, PartialEq)]
pub enum Completion<'a> {
    Error(&'a str),
    Void,
    /// The result's MessagePack bytes, as they arrived.
    Value(&'a [u8]),
}

/// Splits the start of `data` into its length-prefixed message bodies:
/// calls `each` with every whole one, and returns how many bytes they took
/// (the rest is the start of a message still to come). A prefix over
/// `max` is refused.
pub fn split(
    data: &[u8],
    max: usize,
    mut each: impl FnMut(&[u8]) -> Result<(), Malformed>,
) -> Result<usize, Malformed> {
    let mut at = 0;
    loop {
        let Some((len, prefix)) = read_prefix(&data[at..])? else {
            return Ok(at);
        };
        if len > max {
            return Err(TOO_LARGE);
        }
        let Some(body) = data.get(at + prefix..at + prefix + len) else {
            return Ok(at);
        };
        each(body)?;
        at += prefix + len;
    }
}

/// The VarInt at the start of `data` and its length in bytes; None if it
/// is not all there yet.
fn read_prefix(data: &[u8]) -> Result<Option<(usize, usize)>, Malformed> {
    let mut value = 0usize;
    for (i, &byte) in data.iter().enumerate().take(MAX_PREFIX) {
        value |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if data.len() >= MAX_PREFIX {
        Err("length prefix longer than 5 bytes")
    } else {
        Ok(None)
    }
}

fn write_prefix(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len & 0x7F) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads one message body.
pub fn parse(body: &[u8]) -> Result<Message<'_>, Malformed> {
    let mut r = Reader { buf: body, pos: 0 };
    let fields = r.array_len()?;
    if fields == 0 {
        return Err("empty hub message");
    }
    let kind = r.uint()?;
    let kind = u8::try_from(kind).map_err(|_| "unknown hub message type")?;
    let mut message = Message {
        kind,
        invocation_id: None,
        target: None,
        arguments: SmallVec::new(),
        completion: None,
    };
    match kind {
        // Invocation and StreamInvocation.
        1 | 4 => {
            if fields < 5 {
                return Err("invocation with too few fields");
            }
            r.skip_headers()?;
            message.invocation_id = r.nil_or_str()?;
            message.target = Some(r.str()?);
            let count = r.array_len()?;
            for _ in 0..count {
                message.arguments.push(r.value()?);
            }
        }
        // A Completion: its id, then how it ended.
        3 => {
            if fields < 4 {
                return Err("completion with too few fields");
            }
            r.skip_headers()?;
            message.invocation_id = r.nil_or_str()?;
            message.completion = Some(match (r.uint()?, fields) {
                (1, 5..) => Completion::Error(r.str()?),
                (2, _) => Completion::Void,
                (3, 5..) => Completion::Value(r.value()?),
                _ => return Err("completion of an unknown kind"),
            });
        }
        // CancelInvocation, StreamItem: what the hub does not answer needs
        // only its id, and not even that.
        2 | 5 => {
            if fields < 3 {
                return Err("message with too few fields");
            }
            r.skip_headers()?;
            message.invocation_id = r.nil_or_str()?;
        }
        _ => {}
    }
    Ok(message)
}

/// A cursor over one message body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let bytes = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or("message ends early")?;
        self.pos += n;
        Ok(bytes)
    }

    fn be(&mut self, n: usize) -> Result<u64, Malformed> {
        Ok(self.take(n)?.iter().fold(0u64, |v, &b| (v << 8) | b as u64))
    }

    fn marker(&mut self) -> Result<Marker, Malformed> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }

    fn array_len(&mut self) -> Result<u64, Malformed> {
        match self.marker()? {
            Marker::FixArray(n) => Ok(n as u64),
            Marker::Array16 => self.be(2),
            Marker::Array32 => self.be(4),
            _ => Err("expected an array"),
        }
    }

    fn uint(&mut self) -> Result<u64, Malformed> {
        match self.marker()? {
            Marker::FixPos(n) => Ok(n as u64),
            Marker::U8 => self.be(1),
            Marker::U16 => self.be(2),
            Marker::U32 => self.be(4),
            Marker::U64 => self.be(8),
            _ => Err("expected an unsigned integer"),
        }
    }

    fn str_after(&mut self, marker: Marker) -> Result<&'a str, Malformed> {
        let len = match marker {
            Marker::FixStr(n) => n as usize,
            Marker::Str8 => self.be(1)? as usize,
            Marker::Str16 => self.be(2)? as usize,
            Marker::Str32 => self.be(4)? as usize,
            _ => return Err("expected a string"),
        };
        simdutf8::basic::from_utf8(self.take(len)?).map_err(|_| "string is not UTF-8")
    }

    fn str(&mut self) -> Result<&'a str, Malformed> {
        let marker = self.marker()?;
        self.str_after(marker)
    }

    fn nil_or_str(&mut self) -> Result<Option<&'a str>, Malformed> {
        match self.marker()? {
            Marker::Null => Ok(None),
            marker => self.str_after(marker).map(Some),
        }
    }

    /// Headers: a map of strings to strings, which this hub does not use.
    fn skip_headers(&mut self) -> Result<(), Malformed> {
        let pairs = match self.marker()? {
            Marker::FixMap(n) => n as u64,
            Marker::Map16 => self.be(2)?,
            Marker::Map32 => self.be(4)?,
            _ => return Err("expected a map of headers"),
        };
        for _ in 0..pairs {
            self.str()?;
            self.str()?;
        }
        Ok(())
    }

    /// Skips one value, whatever it holds, and returns its bytes.
    fn value(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.pos;
        // Values still to skip: containers add their elements.
        let mut left: u64 = 1;
        while left > 0 {
            left -= 1;
            let skip = match self.marker()? {
                Marker::FixPos(_)
                | Marker::FixNeg(_)
                | Marker::Null
                | Marker::True
                | Marker::False => 0,
                Marker::U8 | Marker::I8 => 1,
                Marker::U16 | Marker::I16 => 2,
                Marker::U32 | Marker::I32 | Marker::F32 => 4,
                Marker::U64 | Marker::I64 | Marker::F64 => 8,
                Marker::FixStr(n) => n as u64,
                Marker::Str8 | Marker::Bin8 => self.be(1)?,
                Marker::Str16 | Marker::Bin16 => self.be(2)?,
                Marker::Str32 | Marker::Bin32 => self.be(4)?,
                Marker::FixArray(n) => {
                    left += n as u64;
                    0
                }
                Marker::Array16 => {
                    left += self.be(2)?;
                    0
                }
                Marker::Array32 => {
                    left += self.be(4)?;
                    0
                }
                Marker::FixMap(n) => {
                    left += 2 * n as u64;
                    0
                }
                Marker::Map16 => {
                    left += 2 * self.be(2)?;
                    0
                }
                Marker::Map32 => {
                    left += 2 * self.be(4)?;
                    0
                }
                // An extension: its type byte, then its data.
                Marker::FixExt1 => 2,
                Marker::FixExt2 => 3,
                Marker::FixExt4 => 5,
                Marker::FixExt8 => 9,
                Marker::FixExt16 => 17,
                Marker::Ext8 => self.be(1)? + 1,
                Marker::Ext16 => self.be(2)? + 1,
                Marker::Ext32 => self.be(4)? + 1,
                Marker::Reserved => return Err("reserved MessagePack marker 0xc1"),
            };
            // A claimed length beyond the message fails here, before any
            // count can grow past what the bytes could hold.
            self.take(usize::try_from(skip).map_err(|_| "message ends early")?)?;
            if left > (self.buf.len() - self.pos) as u64 {
                return Err("message ends early");
            }
        }
        Ok(&self.buf[start..self.pos])
    }
}

/// Writes hub messages, each with its length prefix.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    /// One message of `len` bytes, which `body` writes: the length is
    /// known before the body, so the prefix goes first and nothing moves.
    fn message(&mut self, len: usize, body: impl FnOnce(&mut Vec<u8>)) {
        write_prefix(self.0, len);
        let start = self.0.len();
        body(self.0);
        debug_assert_eq!(self.0.len() - start, len, "a message's length, reckoned");
    }

    /// A Completion: `Ok(Some(bytes))` a result (MessagePack, copied as
    /// is), `Ok(None)` none, `Err` an error.
    pub fn completion(&mut self, id: &str, result: Result<Option<&[u8]>, &str>) {
        let outcome = match result {
            Ok(Some(value)) => 1 + value.len(),
            Ok(None) => 1,
            Err(error) => 1 + str_len(error),
        };
        self.message(3 + str_len(id) + outcome, |out| {
            let fields = if matches!(result, Ok(None)) { 4 } else { 5 };
            write_array_len(out, fields);
            out.push(3);
            out.push(0x80); // no headers
            write_str(out, id);
            match result {
                Ok(Some(value)) => {
                    out.push(3);
                    out.extend_from_slice(value);
                }
                Ok(None) => out.push(2),
                Err(error) => {
                    out.push(1);
                    write_str(out, error);
                }
            }
        });
    }

    /// An Invocation of `target` with one argument, `argument` being its
    /// MessagePack bytes; without an id, nothing is to answer it.
    pub fn invocation(&mut self, id: Option<&str>, target: &str, argument: &[u8]) {
        let len = 3 + id.map_or(1, str_len) + str_len(target) + 1 + argument.len() + 1;
        self.message(len, |out| {
            write_array_len(out, 6);
            out.push(1);
            out.push(0x80);
            match id {
                Some(id) => write_str(out, id),
                None => out.push(0xC0),
            }
            write_str(out, target);
            write_array_len(out, 1);
            out.extend_from_slice(argument);
            write_array_len(out, 0); // no stream ids
        });
    }

    /// A Close with an error; no reconnecting.
    pub fn close(&mut self, error: &str) {
        self.message(2 + str_len(error) + 1, |out| {
            write_array_len(out, 3);
            out.push(7);
            write_str(out, error);
            out.push(0xC2); // false
        });
    }

    pub fn ping(&mut self) {
        self.message(2, |out| out.extend_from_slice(&[0x91, 6]));
    }
}

/// Appends the VarInt length prefix of a `len`-byte message body.
pub fn write_length(out: &mut Vec<u8>, len: usize) {
    write_prefix(out, len);
}

/// The bytes of the VarInt prefix of a `len`-byte body.
pub fn length_len(len: usize) -> usize {
    let mut n = 1;
    while len >> (7 * n) != 0 {
        n += 1;
    }
    n
}

/// The bytes `s` takes as a MessagePack string, header included.
pub fn str_len(s: &str) -> usize {
    str_header_len(s.len()) + s.len()
}

/// The bytes of a MessagePack string header for `len` bytes.
pub fn str_header_len(len: usize) -> usize {
    match len {
        0..=31 => 1,
        32..=0xFF => 2,
        0x100..=0xFFFF => 3,
        _ => 5,
    }
}

fn write_array_len(out: &mut Vec<u8>, len: u32) {
    rmp::encode::write_array_len(out, len).expect("writing to memory");
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    rmp::encode::write_str(out, s).expect("writing to memory");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(data: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let mut all = Vec::new();
        let used = split(data, usize::MAX, |body| {
            all.push(body.to_vec());
            Ok(())
        })
        .unwrap();
        (all, used)
    }

    /// The examples of the SignalR hub protocol specification, byte for byte.
    #[test]
    fn the_specifications_examples_read_as_it_says() {
        let with_headers = [
            0x96, 0x01, 0x82, 0xa1, 0x78, 0xa1, 0x79, 0xa1, 0x7a, 0xa1, 0x7a, 0xa3, 0x78, 0x79,
            0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
        ];
        let invocation = [
            0x96, 0x01, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64,
            0x91, 0x2a, 0x90,
        ];
        let m = parse(&invocation).unwrap();
        assert_eq!(
            (m.kind, m.invocation_id, m.target),
            (1, Some("xyz"), Some("method"))
        );
        assert_eq!(m.arguments.as_slice(), [&[0x2a][..]]);
        assert_eq!(parse(&with_headers).unwrap(), m);
        let non_blocking = [
            0x96, 0x01, 0x80, 0xc0, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
        ];
        assert_eq!(parse(&non_blocking).unwrap().invocation_id, None);
        assert_eq!(parse(&[0x91, 0x06]).unwrap().kind, 6);
        let cancel = [0x93, 0x05, 0x80, 0xa3, 0x78, 0x79, 0x7a];
        assert_eq!(parse(&cancel).unwrap().invocation_id, Some("xyz"));

        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.completion("xyz", Err("Error"));
        w.completion("xyz", Ok(None));
        w.completion("xyz", Ok(Some(&[0x2a])));
        w.close("xyz");
        w.ping();
        let (all, used) = bodies(&out);
        assert_eq!(used, out.len());
        assert_eq!(
            all,
            [
                &[
                    0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x01, 0xa5, 0x45, 0x72, 0x72, 0x6f,
                    0x72
                ][..],
                &[0x94, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x02],
                &[0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x03, 0x2a],
                &[0x93, 0x07, 0xa3, 0x78, 0x79, 0x7a, 0xc2],
                &[0x91, 0x06],
            ]
        );
        let completions: Vec<_> = all[..3]
            .iter()
            .map(|body| parse(body).unwrap().completion.unwrap())
            .collect();
        assert_eq!(
            completions,
            [
                Completion::Error("Error"),
                Completion::Void,
                Completion::Value(&[0x2a])
            ]
        );
    }

    /// The specification's VarInt examples, and prefixes across the sizes
    /// where they grow a byte.
    #[test]
    fn length_prefixes_are_varints_and_messages_may_arrive_in_pieces() {
        assert_eq!(read_prefix(&[0x35]).unwrap(), Some((0x35, 1)));
        assert_eq!(read_prefix(&[0x80, 0x29]).unwrap(), Some((0x1480, 2)));
        assert_eq!(read_prefix(&[0x80]).unwrap(), None);
        assert!(read_prefix(&[0xff; 5]).is_err());
        for len in [0, 1, 127, 128, 16_383, 16_384, 2_097_152] {
            let mut out = Vec::new();
            let argument = vec![0xc0; len]; // nils: any bytes will do
            Writer(&mut out).invocation(None, "t", &argument);
            assert_eq!(length_len(out.len()), {
                let mut prefix = Vec::new();
                write_length(&mut prefix, out.len());
                prefix.len()
            });
            let body_len = out.len() - read_prefix(&out).unwrap().unwrap().1;
            assert_eq!(read_prefix(&out).unwrap().unwrap().0, body_len, "{len}");
            // Whole, then cut anywhere: the whole message or nothing.
            assert_eq!(bodies(&out).1, out.len());
            for cut in [1, out.len() / 2, out.len() - 1] {
                assert_eq!(bodies(&out[..cut]).1, 0, "{len} cut at {cut}");
            }
        }
        // Every length reckoned before writing, across the sizes where a
        // string's header grows.
        for n in [0, 31, 32, 255, 256, 65_535, 65_536] {
            let text = "x".repeat(n);
            let mut out = Vec::new();
            let mut w = Writer(&mut out);
            w.completion(&text, Err(&text));
            w.completion(&text, Ok(Some(text.as_bytes())));
            w.invocation(Some(&text), &text, b"\xc0");
            w.close(&text);
            let (all, used) = bodies(&out);
            assert_eq!((all.len(), used), (4, out.len()), "{n}");
        }
        let mut big = Vec::new();
        Writer(&mut big).invocation(None, "t", &[0xc0; 100]);
        assert!(split(&big, 50, |_| Ok(())).is_err(), "over the maximum");
    }

    /// Every kind of value is skipped to its end, nested or not, and a
    /// value that claims more than the message holds is refused.
    #[test]
    fn arguments_keep_their_bytes_and_lies_about_lengths_are_caught() {
        let value = rmpv::Value::Array(vec![
            rmpv::Value::from(-5),
            rmpv::Value::from(70_000u32),
            rmpv::Value::from(u64::MAX),
            rmpv::Value::from(1.5f64),
            rmpv::Value::from("é".repeat(40)),
            rmpv::Value::Binary(vec![1, 2, 3]),
            rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::Nil)]),
            rmpv::Value::Ext(7, vec![0; 16]),
            rmpv::Value::Ext(7, vec![0; 3]),
            rmpv::Value::from(true),
            rmpv::Value::Array(vec![rmpv::Value::from(1); 40]),
        ]);
        let mut arg = Vec::new();
        rmpv::encode::write_value(&mut arg, &value).unwrap();
        let mut out = Vec::new();
        Writer(&mut out).invocation(Some("7"), "Echo", &arg);
        let (all, _) = bodies(&out);
        let m = parse(&all[0]).unwrap();
        assert_eq!(m.arguments.as_slice(), [&arg[..]]);
        // Cut short anywhere inside the argument: refused, never a panic.
        let body = &all[0];
        for end in 0..body.len() - 1 {
            assert!(parse(&body[..end]).is_err(), "cut at {end}");
        }
        // A nesting too deep for any stack: a flat loop handles it.
        let deep: Vec<u8> = [0x96, 0x01, 0x80, 0xc0, 0xa1, b'x', 0x91]
            .into_iter()
            .chain(std::iter::repeat_n(0x91, 100_000))
            .chain([0xc0, 0x90])
            .collect();
        assert_eq!(parse(&deep).unwrap().arguments[0].len(), 100_001);
        // An array claiming 2^32 − 1 elements in a few bytes.
        let liar = [
            0x96, 0x01, 0x80, 0xc0, 0xa1, b'x', 0x91, 0xdd, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(parse(&liar).is_err());
        assert!(parse(&[0x91, 0xc1]).is_err());
        assert!(parse(&[0x90]).is_err());
    }
}

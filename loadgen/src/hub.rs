//! The SignalR hub protocol, client side, in both its encodings (JSON
//! records, or MessagePack messages behind VarInt lengths, through the
//! `hub-msgpack` crate the engine uses too): enough to measure `Echo`
//! invocations. Negotiation, and the fallback transports, are in
//! `transport`.

use std::borrow::Cow;

use fastwebsockets::OpCode;
use serde::Deserialize;

use crate::options::{HubEncoding, MessageType};
use crate::payload::Pattern;

pub const RECORD_SEPARATOR: u8 = 0x1E;
pub const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
const HANDSHAKE_MESSAGEPACK: &[u8] = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";

/// A load's hub protocol: its encoding, and for MessagePack whether
/// payloads travel as strings (text) or bytes (binary). JSON payloads are
/// strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hub {
    pub encoding: HubEncoding,
    pub message_type: MessageType,
}

impl Hub {
    /// The handshake, a JSON record in either encoding.
    pub fn handshake(self) -> &'static [u8] {
        match self.encoding {
            HubEncoding::Json => HANDSHAKE,
            HubEncoding::Messagepack => HANDSHAKE_MESSAGEPACK,
        }
    }

    /// The frames hub messages travel in after the handshake.
    pub fn opcode(self) -> OpCode {
        match self.encoding {
            HubEncoding::Json => OpCode::Text,
            HubEncoding::Messagepack => OpCode::Binary,
        }
    }

    /// The bytes of an `Echo` invocation whose id has `digits` digits and
    /// whose payload has `len` bytes.
    pub fn invocation_len(self, digits: usize, len: usize) -> usize {
        match self.encoding {
            HubEncoding::Json => {
                INVOCATION_HEAD.len() + len + INVOCATION_ID.len() + digits + INVOCATION_END.len()
            }
            HubEncoding::Messagepack => {
                let body = self.packed_body_len(digits, len);
                hub_msgpack::length_len(body) + body
            }
        }
    }

    /// `[1, {}, "<id>", "Echo", [payload], []]`: its length without the prefix.
    fn packed_body_len(self, digits: usize, len: usize) -> usize {
        3 + hub_msgpack::str_header_len(digits)
            + digits
            + 5
            + 1
            + self.payload_header(len)
            + len
            + 1
    }

    fn payload_header(self, len: usize) -> usize {
        match self.message_type {
            MessageType::Text => hub_msgpack::str_header_len(len),
            MessageType::Binary => match len {
                0..=0xFF => 2,
                0x100..=0xFFFF => 3,
                _ => 5,
            },
        }
    }

    /// Appends `Echo(payload)` with invocation id `seq`, the payload being
    /// `len` bytes that `payload` appends.
    pub fn write_invocation(
        self,
        seq: u64,
        len: usize,
        out: &mut Vec<u8>,
        payload: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut digits = [0u8; 20];
        let id = decimal(seq, &mut digits);
        match self.encoding {
            HubEncoding::Json => {
                out.extend_from_slice(INVOCATION_HEAD);
                payload(out);
                out.extend_from_slice(INVOCATION_ID);
                out.extend_from_slice(id);
                out.extend_from_slice(INVOCATION_END);
            }
            HubEncoding::Messagepack => {
                hub_msgpack::write_length(out, self.packed_body_len(id.len(), len));
                out.extend_from_slice(&[0x96, 0x01, 0x80]);
                let id = std::str::from_utf8(id).expect("decimal digits");
                rmp::encode::write_str(out, id).expect("writing to memory");
                out.extend_from_slice(b"\xa4Echo\x91");
                match self.message_type {
                    MessageType::Text => rmp::encode::write_str_len(out, len as u32),
                    MessageType::Binary => rmp::encode::write_bin_len(out, len as u32),
                }
                .expect("writing to memory");
                payload(out);
                out.push(0x90);
            }
        }
    }

    /// Appends `SendToAll(payload)`, an invocation without an id (no answer
    /// comes back but the broadcast itself), as the official client's
    /// `send` writes it.
    pub fn write_send_to_all(self, payload: &[u8], out: &mut Vec<u8>) {
        match self.encoding {
            HubEncoding::Json => {
                out.extend_from_slice(b"{\"type\":1,\"target\":\"SendToAll\",\"arguments\":[\"");
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\"]}\x1e");
            }
            HubEncoding::Messagepack => {
                // [1, {}, nil, "SendToAll", [payload], []]
                let header = self.payload_header(payload.len());
                let body = 3 + 1 + 10 + 1 + header + payload.len() + 1;
                hub_msgpack::write_length(out, body);
                out.extend_from_slice(&[0x96, 0x01, 0x80, 0xC0]);
                out.extend_from_slice(b"\xa9SendToAll\x91");
                out.extend_from_slice(&self.header_of(payload.len())[..header]);
                out.extend_from_slice(payload);
                out.push(0x90);
            }
        }
    }

    /// Reads a message the server broadcast: the payload of `Receive(x)`
    /// (a string in JSON; a string or bytes, as sent, in MessagePack).
    pub fn read_receive<'a>(self, message: &'a [u8]) -> Received<'a> {
        match self.encoding {
            HubEncoding::Json => {
                let exact = message
                    .strip_prefix(RECEIVE_HEAD)
                    .and_then(|rest| rest.strip_suffix(b"\"]}".as_slice()));
                if let Some(payload) = exact {
                    return Received::Payload(Cow::Borrowed(payload));
                }
                match serde_json::from_slice::<Invocation>(message) {
                    Ok(call) if call.kind == 1 && call.target.as_deref() == Some("Receive") => {
                        match call.arguments.as_deref() {
                            Some([value]) => {
                                Received::Payload(Cow::Owned(value.as_bytes().to_vec()))
                            }
                            _ => Received::Unexpected,
                        }
                    }
                    Ok(call) if call.kind == 6 => Received::Ping,
                    Ok(call) if call.kind == 7 => Received::Close,
                    _ => Received::Unexpected,
                }
            }
            HubEncoding::Messagepack => {
                let Ok(call) = hub_msgpack::parse(message) else {
                    return Received::Unexpected;
                };
                match (call.kind, call.target, call.arguments.as_slice()) {
                    (1, Some("Receive"), [value]) => {
                        let mut rest = *value;
                        let len = match self.message_type {
                            MessageType::Text => rmp::decode::read_str_len(&mut rest).ok(),
                            MessageType::Binary => rmp::decode::read_bin_len(&mut rest).ok(),
                        };
                        match len {
                            Some(len) if len as usize == rest.len() => {
                                Received::Payload(Cow::Borrowed(rest))
                            }
                            _ => Received::Unexpected,
                        }
                    }
                    (6, _, _) => Received::Ping,
                    (7, _, _) => Received::Close,
                    _ => Received::Unexpected,
                }
            }
        }
    }

    /// Reads one record or message (without its separator or length), as
    /// [`read_record`] does for JSON.
    pub fn read(self, message: &[u8], expected: Option<u64>, pattern: &Pattern) -> Said {
        match self.encoding {
            HubEncoding::Json => read_record(message, expected, pattern),
            HubEncoding::Messagepack => self.read_packed(message, expected, pattern),
        }
    }

    fn read_packed(self, body: &[u8], expected: Option<u64>, pattern: &Pattern) -> Said {
        let Ok(message) = hub_msgpack::parse(body) else {
            return Said::Unexpected;
        };
        match (message.kind, message.completion) {
            (3, Some(completion)) => {
                let ok = expected.is_some_and(|seq| {
                    let mut digits = [0u8; 20];
                    let id = decimal(seq, &mut digits);
                    let hub_msgpack::Completion::Value(value) = completion else {
                        return false;
                    };
                    let header = self.payload_header(pattern.size());
                    message.invocation_id.map(str::as_bytes) == Some(id)
                        && value.len() == header + pattern.size()
                        && value[..header] == self.header_of(pattern.size())[..header]
                        && pattern.matches(seq, &value[header..])
                });
                Said::Completion { ok }
            }
            (6, _) => Said::Ping,
            (7, _) => Said::Close,
            _ => Said::Unexpected,
        }
    }

    /// The MessagePack header of a `len`-byte payload (written on the
    /// stack: it is read for every completion).
    fn header_of(self, len: usize) -> [u8; 5] {
        let mut header = [0u8; 5];
        let mut out = &mut header[..];
        match self.message_type {
            MessageType::Text => rmp::encode::write_str_len(&mut out, len as u32).map(drop),
            MessageType::Binary => rmp::encode::write_bin_len(&mut out, len as u32).map(drop),
        }
        .expect("5 bytes hold any header");
        header
    }

    pub fn records(self) -> Records {
        Records {
            partial: Vec::new(),
            encoding: self.encoding,
        }
    }
}

/// An `Echo` invocation is these three pieces around its payload and id.
pub const INVOCATION_HEAD: &[u8] = b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"";
pub const INVOCATION_ID: &[u8] = b"\"],\"invocationId\":\"";
pub const INVOCATION_END: &[u8] = b"\"}\x1e";

/// Appends the JSON invocation of `Echo(payload)` with id `seq`. loadgen's
/// text payloads hold no quote, backslash or control character: no JSON
/// escaping needed.
pub fn invocation(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(INVOCATION_HEAD);
    out.extend_from_slice(payload);
    out.extend_from_slice(INVOCATION_ID);
    out.extend_from_slice(decimal(seq, &mut [0; 20]));
    out.extend_from_slice(INVOCATION_END);
}

/// How the engine (and ASP.NET Core) write `Receive("<payload>")`: the
/// payload between this and `"]}`.
const RECEIVE_HEAD: &[u8] = b"{\"type\":1,\"target\":\"Receive\",\"arguments\":[\"";

/// A broadcast message, as a receiver reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    Payload(Cow<'a, [u8]>),
    Ping,
    Close,
    Unexpected,
}

/// The fields of an invocation that a receiver of broadcasts reads.
#[derive(Deserialize)]
struct Invocation<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow, default)]
    target: Option<Cow<'a, str>>,
    #[serde(default)]
    arguments: Option<Vec<String>>,
}

/// What a server's record is to loadgen.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    /// A completion; `ok` when it completes the invocation expected next
    /// with exactly its payload and no error.
    Completion { ok: bool },
    /// The server's keep-alive ping.
    Ping,
    /// The server closes the hub connection.
    Close,
    /// Anything else.
    Unexpected,
}

/// Reads one record (without its separator), `expected` being the id of the
/// invocation whose completion comes next, if any. A completion written as
/// ringecho and ASP.NET Core write one (type, invocationId, result) is
/// compared byte for byte without parsing; any other form is parsed.
pub fn read_record(record: &[u8], expected: Option<u64>, pattern: &Pattern) -> Said {
    if let Some(seq) = expected {
        if completes_exactly(record, seq, pattern) {
            return Said::Completion { ok: true };
        }
    }
    match serde_json::from_slice::<Reply>(record) {
        Ok(reply) if reply.kind == 3 => {
            let ok = expected.is_some_and(|seq| {
                reply.id.as_deref().map(str::as_bytes) == Some(decimal(seq, &mut [0; 20]))
                    && reply
                        .result
                        .as_deref()
                        .is_some_and(|r| pattern.matches(seq, r.as_bytes()))
                    && reply.error.is_none()
            });
            Said::Completion { ok }
        }
        Ok(reply) if reply.kind == 6 => Said::Ping,
        Ok(reply) if reply.kind == 7 => Said::Close,
        _ => Said::Unexpected,
    }
}

/// Whether `record` is `{"type":3,"invocationId":"<seq>","result":"<payload
/// of seq>"}` byte for byte. Equal bytes mean an equal string; a server that
/// escapes what it need not (é as \u00e9, say) takes the parsed path.
fn completes_exactly(record: &[u8], seq: u64, pattern: &Pattern) -> bool {
    let result = record
        .strip_prefix(b"{\"type\":3,\"invocationId\":\"".as_slice())
        .and_then(|rest| rest.strip_prefix(decimal(seq, &mut [0; 20])))
        .and_then(|rest| rest.strip_prefix(b"\",\"result\":\"".as_slice()))
        .and_then(|rest| rest.strip_suffix(b"\"}".as_slice()));
    result.is_some_and(|result| pattern.matches(seq, result))
}

/// `n` in decimal digits, written into `buf` (no allocation).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The fields of server messages that loadgen reads.
#[derive(Deserialize, Debug)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow, default, rename = "invocationId")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    result: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// Splits the server's messages into hub messages: JSON records ended by
/// 0x1E, or MessagePack bodies behind their lengths; one may span
/// WebSocket messages.
#[derive(Default)]
pub struct Records {
    partial: Vec<u8>,
    encoding: HubEncoding,
}

impl Records {
    /// Calls `each` for every complete record in `data` (after what was
    /// kept). A malformed MessagePack length is passed on as an empty
    /// message (unexpected), and ends the splitting.
    pub fn feed(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        let joined;
        let data = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(data);
            joined = std::mem::take(&mut self.partial);
            &joined[..]
        };
        let used = match self.encoding {
            HubEncoding::Json => {
                let mut start = 0;
                for end in memchr::memchr_iter(RECORD_SEPARATOR, data) {
                    each(&data[start..end]);
                    start = end + 1;
                }
                start
            }
            HubEncoding::Messagepack => hub_msgpack::split(data, usize::MAX, |body| {
                each(body);
                Ok(())
            })
            .unwrap_or_else(|_| {
                each(&[]);
                data.len()
            }),
        };
        self.partial.extend_from_slice(&data[used..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_are_valid_json_records() {
        let mut out = Vec::new();
        invocation(12, b"abc123", &mut out);
        assert_eq!(out.last(), Some(&RECORD_SEPARATOR));
        let value: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(value["target"], "Echo");
        assert_eq!(value["arguments"][0], "abc123");
        assert_eq!(value["invocationId"], "12");
    }

    #[test]
    fn completions_are_judged_alike_whether_exact_or_parsed() {
        use crate::options::MessageType;
        let pattern = Pattern::new(40, MessageType::Text);
        let mut payload = Vec::new();
        pattern.write(7, &mut payload);
        let payload = std::str::from_utf8(&payload).unwrap();
        let ok = Said::Completion { ok: true };
        let bad = Said::Completion { ok: false };
        let completion =
            |result: &str| format!("{{\"type\":3,\"invocationId\":\"7\",\"result\":\"{result}\"}}");
        let exact = completion(payload);
        assert_eq!(read_record(exact.as_bytes(), Some(7), &pattern), ok);
        // Another field order and spacing: parsed, same verdict.
        let other =
            format!("{{ \"result\": \"{payload}\", \"type\": 3, \"invocationId\": \"7\" }}");
        assert_eq!(read_record(other.as_bytes(), Some(7), &pattern), ok);
        // An escaped payload is the same string: the parser finds it equal.
        let escaped = format!(
            "{}\\u{:04x}{}",
            &payload[..10],
            payload.as_bytes()[10],
            &payload[11..]
        );
        assert_eq!(
            read_record(completion(&escaped).as_bytes(), Some(7), &pattern),
            ok
        );
        // The wrong id, a changed byte, an error, nothing expected.
        assert_eq!(read_record(exact.as_bytes(), Some(8), &pattern), bad);
        let changed = format!("{}~{}", &payload[..10], &payload[11..]);
        assert_eq!(
            read_record(completion(&changed).as_bytes(), Some(7), &pattern),
            bad
        );
        let error = "{\"type\":3,\"invocationId\":\"7\",\"error\":\"no\"}";
        assert_eq!(read_record(error.as_bytes(), Some(7), &pattern), bad);
        assert_eq!(read_record(exact.as_bytes(), None, &pattern), bad);
        assert_eq!(read_record(b"{\"type\":6}", None, &pattern), Said::Ping);
        assert_eq!(read_record(b"{\"type\":7}", Some(1), &pattern), Said::Close);
        assert_eq!(read_record(b"[1]", Some(1), &pattern), Said::Unexpected);
    }

    /// MessagePack completions: the exact payload under the right id
    /// passes, in bytes or as a string as sent; anything else does not.
    #[test]
    fn messagepack_completions_are_judged_byte_for_byte() {
        for message_type in [MessageType::Binary, MessageType::Text] {
            let hub = Hub {
                encoding: HubEncoding::Messagepack,
                message_type,
            };
            for size in [0, 5, 31, 32, 255, 256, 70_000] {
                let pattern = Pattern::new(size, message_type);
                let mut payload = Vec::new();
                pattern.write(7, &mut payload);
                // The invocation, read by the engine's reader.
                let mut invocation = Vec::new();
                hub.write_invocation(7, size, &mut invocation, |out| {
                    out.extend_from_slice(&payload)
                });
                assert_eq!(invocation.len(), hub.invocation_len(1, size));
                let mut bodies = Vec::new();
                hub.records().feed(&invocation, |b| bodies.push(b.to_vec()));
                let call = hub_msgpack::parse(&bodies[0]).unwrap();
                let argument = call.arguments[0];
                // Its Completion, as a server writes it from that argument.
                let answer = |id: &str, result: Result<Option<&[u8]>, &str>| {
                    let mut out = Vec::new();
                    hub_msgpack::Writer(&mut out).completion(id, result);
                    let mut body = Vec::new();
                    hub.records().feed(&out, |b| body = b.to_vec());
                    body
                };
                let ok = Said::Completion { ok: true };
                let bad = Said::Completion { ok: false };
                let exact = answer("7", Ok(Some(argument)));
                assert_eq!(hub.read(&exact, Some(7), &pattern), ok, "{size}");
                assert_eq!(hub.read(&exact, Some(8), &pattern), bad);
                assert_eq!(hub.read(&exact, None, &pattern), bad);
                assert_eq!(hub.read(&answer("7", Ok(None)), Some(7), &pattern), bad);
                assert_eq!(hub.read(&answer("7", Err("no")), Some(7), &pattern), bad);
                if size > 0 {
                    let mut changed = argument.to_vec();
                    *changed.last_mut().unwrap() ^= 1;
                    let changed = answer("7", Ok(Some(&changed)));
                    assert_eq!(hub.read(&changed, Some(7), &pattern), bad, "{size}");
                }
            }
            assert_eq!(
                hub.read(&[0x91, 0x06], None, &Pattern::new(1, message_type)),
                Said::Ping
            );
            let close = [0x93, 0x07, 0xa1, b'x', 0xc2];
            assert_eq!(
                hub.read(&close, Some(1), &Pattern::new(1, message_type)),
                Said::Close
            );
            assert_eq!(
                hub.read(&[0xc1], Some(1), &Pattern::new(1, message_type)),
                Said::Unexpected
            );
        }
        // A payload sent as bytes does not match the same string.
        let (bytes, text) = (
            Hub {
                encoding: HubEncoding::Messagepack,
                message_type: MessageType::Binary,
            },
            Hub {
                encoding: HubEncoding::Messagepack,
                message_type: MessageType::Text,
            },
        );
        let pattern = Pattern::new(20, MessageType::Text);
        let mut payload = Vec::new();
        pattern.write(3, &mut payload);
        let mut invocation = Vec::new();
        text.write_invocation(3, 20, &mut invocation, |out| {
            out.extend_from_slice(&payload)
        });
        let mut body = Vec::new();
        text.records().feed(&invocation, |b| body = b.to_vec());
        let argument = hub_msgpack::parse(&body).unwrap().arguments[0].to_vec();
        let mut out = Vec::new();
        hub_msgpack::Writer(&mut out).completion("3", Ok(Some(&argument)));
        let mut completion = Vec::new();
        bytes.records().feed(&out, |b| completion = b.to_vec());
        assert_eq!(
            bytes.read(&completion, Some(3), &pattern),
            Said::Completion { ok: false }
        );
    }

    /// SendToAll as the engine's own reader sees it, and Receive as the
    /// engine writes it, read back, in both encodings.
    #[test]
    fn broadcasts_are_written_and_read_in_both_encodings() {
        let json = Hub {
            encoding: HubEncoding::Json,
            message_type: MessageType::Text,
        };
        let mut out = Vec::new();
        json.write_send_to_all(b"abc", &mut out);
        let value: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": 1, "target": "SendToAll", "arguments": ["abc"]})
        );
        let receive = b"{\"type\":1,\"target\":\"Receive\",\"arguments\":[\"abc\"]}";
        assert_eq!(
            json.read_receive(receive),
            Received::Payload(Cow::Borrowed(b"abc"))
        );
        let spaced = b"{ \"arguments\": [\"abc\"], \"target\": \"Receive\", \"type\": 1 }";
        assert_eq!(
            json.read_receive(spaced),
            Received::Payload(Cow::Borrowed(b"abc"))
        );
        assert_eq!(json.read_receive(b"{\"type\":6}"), Received::Ping);
        for message_type in [MessageType::Text, MessageType::Binary] {
            let packed = Hub {
                encoding: HubEncoding::Messagepack,
                message_type,
            };
            out.clear();
            packed.write_send_to_all(b"xyz", &mut out);
            let mut bodies = Vec::new();
            packed.records().feed(&out, |b| bodies.push(b.to_vec()));
            assert_eq!(bodies.len(), 1, "the length prefix covers the body");
            let call = hub_msgpack::parse(&bodies[0]).unwrap();
            assert_eq!(
                (call.kind, call.target, call.invocation_id),
                (1, Some("SendToAll"), None)
            );
            // Receive(x) as the engine writes it, from that argument.
            let mut receive = Vec::new();
            hub_msgpack::Writer(&mut receive).invocation(None, "Receive", call.arguments[0]);
            let mut body = Vec::new();
            packed.records().feed(&receive, |b| body = b.to_vec());
            assert_eq!(
                packed.read_receive(&body),
                Received::Payload(Cow::Borrowed(b"xyz"))
            );
        }
    }

    #[test]
    fn decimals_are_written_without_allocating() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn records_are_split_and_joined_across_messages() {
        let mut records = Records::default();
        let mut seen = Vec::new();
        records.feed(b"{\"type\":6}\x1e{\"type\":3,\"invoc", |r| {
            seen.push(r.to_vec())
        });
        records.feed(b"ationId\":\"1\",\"result\":\"x\"}\x1e", |r| {
            seen.push(r.to_vec())
        });
        assert_eq!(seen.len(), 2);
        let reply: Reply = serde_json::from_slice(&seen[1]).unwrap();
        assert_eq!(
            (reply.kind, reply.id.as_deref(), reply.result.as_deref()),
            (3, Some("1"), Some("x"))
        );
    }
}

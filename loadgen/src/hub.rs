//! The SignalR JSON hub protocol, client side: enough to measure `Echo`
//! invocations. Connections skip negotiation (the WebSocket goes straight to
//! the hub URL), as the official client's `skipNegotiation` does.

use std::borrow::Cow;

use serde::Deserialize;

use crate::payload::Pattern;

pub const RECORD_SEPARATOR: u8 = 0x1E;
pub const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";

/// An `Echo` invocation is these three pieces around its payload and id.
pub const INVOCATION_HEAD: &[u8] = b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"";
pub const INVOCATION_ID: &[u8] = b"\"],\"invocationId\":\"";
pub const INVOCATION_END: &[u8] = b"\"}\x1e";

/// Appends the invocation of `Echo(payload)` with id `seq`. Payloads are
/// ASCII letters and digits (loadgen's text pattern): no JSON escaping needed.
pub fn invocation(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(INVOCATION_HEAD);
    out.extend_from_slice(payload);
    out.extend_from_slice(INVOCATION_ID);
    out.extend_from_slice(decimal(seq, &mut [0; 20]));
    out.extend_from_slice(INVOCATION_END);
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
/// of seq>"}`. The payload is letters and digits, which JSON writes as they
/// are, so equal bytes mean an equal string.
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

/// Splits text messages into records; a record may span messages.
#[derive(Default)]
pub struct Records {
    partial: Vec<u8>,
}

impl Records {
    /// Calls `each` for every complete record in `data` (after what was kept).
    pub fn feed(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        let joined;
        let data = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(data);
            joined = std::mem::take(&mut self.partial);
            &joined[..]
        };
        let mut start = 0;
        for end in memchr::memchr_iter(RECORD_SEPARATOR, data) {
            each(&data[start..end]);
            start = end + 1;
        }
        self.partial.extend_from_slice(&data[start..]);
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

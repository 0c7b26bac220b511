//! The SignalR JSON hub protocol, client side: enough to measure `Echo`
//! invocations. Connections skip negotiation (the WebSocket goes straight to
//! the hub URL), as the official client's `skipNegotiation` does.

use std::borrow::Cow;

use serde::Deserialize;

pub const RECORD_SEPARATOR: u8 = 0x1E;
pub const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";

/// Appends the invocation of `Echo(payload)` with id `seq`. Payloads are
/// ASCII letters and digits (loadgen's text pattern): no JSON escaping needed.
pub fn invocation(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\"],\"invocationId\":\"");
    out.extend_from_slice(decimal(seq, &mut [0; 20]));
    out.extend_from_slice(b"\"}");
    out.push(RECORD_SEPARATOR);
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
pub struct Reply<'a> {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(borrow, default, rename = "invocationId")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub result: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
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

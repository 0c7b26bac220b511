//! The broadcast scenario's payloads and bookkeeping. A few connections
//! (`--senders`) send, at `--rate` in all, messages the server delivers to
//! every connection: the hub's `SendToAll`, or a raw broadcast endpoint.
//! Each payload says who sent it, its number and when it was due, so that
//! every receiver measures its own delivery's latency (from the due time:
//! coordinated omission corrected) and checks the rest byte for byte; per
//! sender, numbers arrive in order, which tells duplicates and gaps.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::payload::Pattern;

/// The header at the front of every payload: sender (4 hex digits), number
/// (8), due time in µs since this process's base instant (12). Hex digits
/// are text, valid in a JSON string and in a text frame. (Its size is an
/// option's lower bound, so options holds it.)
pub use crate::options::BROADCAST_HEADER as HEADER;

/// The instant due times count from: one per process, so any of its
/// threads reads any other's. (Shards of a cluster each have their own.)
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Writes a payload of `pattern`'s size: the header, then the pattern's
/// bytes for `seq` after its first [`HEADER`] bytes.
pub fn write(pattern: &Pattern, sender: u32, seq: u64, due: Instant, out: &mut Vec<u8>) {
    let start = out.len();
    pattern.append(seq, out);
    let micros = due.saturating_duration_since(base()).as_micros() as u64;
    let header = format!(
        "{:04x}{:08x}{:012x}",
        sender & 0xFFFF,
        seq & 0xFFFF_FFFF,
        micros & 0xFFFF_FFFF_FFFF
    );
    out[start..start + HEADER].copy_from_slice(header.as_bytes());
}

/// A delivery, read back from its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    pub sender: u32,
    pub seq: u64,
    pub due: Instant,
}

/// Reads a payload: None when its header is not one, or the rest is not
/// exactly what its sender wrote.
pub fn read(pattern: &Pattern, payload: &[u8], scratch: &mut Vec<u8>) -> Option<Delivery> {
    if payload.len() != pattern.size() || payload.len() < HEADER {
        return None;
    }
    let hex = |range: std::ops::Range<usize>| {
        let digits = std::str::from_utf8(&payload[range]).ok()?;
        u64::from_str_radix(digits, 16).ok()
    };
    let (sender, seq, micros) = (hex(0..4)?, hex(4..12)?, hex(12..24)?);
    scratch.clear();
    pattern.write(seq, scratch);
    if scratch[HEADER..] != payload[HEADER..] {
        return None;
    }
    Some(Delivery {
        sender: sender as u32,
        seq,
        due: base() + Duration::from_micros(micros),
    })
}

/// One receiver's view of the senders: the number it expects next from
/// each.
#[derive(Default)]
pub struct Tracker {
    next: HashMap<u32, u64>,
}

/// What a delivery was to its receiver.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next one from its sender, after `skipped` that never came.
    New { skipped: u64 },
    /// One delivered before.
    Duplicate,
}

impl Tracker {
    pub fn judge(&mut self, delivery: &Delivery) -> Verdict {
        let next = self.next.entry(delivery.sender).or_insert(0);
        if delivery.seq < *next {
            return Verdict::Duplicate;
        }
        let skipped = delivery.seq - *next;
        *next = delivery.seq + 1;
        Verdict::New { skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::MessageType;

    #[test]
    fn a_payload_says_who_sent_it_when_and_is_checked() {
        let pattern = Pattern::new(40, MessageType::Text);
        let due = base() + Duration::from_micros(123_456);
        let mut payload = Vec::new();
        write(&pattern, 3, 77, due, &mut payload);
        assert_eq!(payload.len(), 40);
        assert!(std::str::from_utf8(&payload).is_ok());
        let mut scratch = Vec::new();
        let delivery = read(&pattern, &payload, &mut scratch).unwrap();
        assert_eq!(
            delivery,
            Delivery {
                sender: 3,
                seq: 77,
                due
            }
        );
        let mut changed = payload.clone();
        changed[30] ^= 1;
        assert_eq!(read(&pattern, &changed, &mut scratch), None);
        assert_eq!(read(&pattern, &payload[..39], &mut scratch), None);
    }

    #[test]
    fn duplicates_and_gaps_are_told_per_sender() {
        let mut tracker = Tracker::default();
        let at = |sender, seq| Delivery {
            sender,
            seq,
            due: base(),
        };
        assert_eq!(tracker.judge(&at(0, 0)), Verdict::New { skipped: 0 });
        assert_eq!(tracker.judge(&at(1, 0)), Verdict::New { skipped: 0 });
        assert_eq!(tracker.judge(&at(0, 3)), Verdict::New { skipped: 2 });
        assert_eq!(tracker.judge(&at(0, 3)), Verdict::Duplicate);
        assert_eq!(tracker.judge(&at(0, 1)), Verdict::Duplicate);
        assert_eq!(tracker.judge(&at(1, 1)), Verdict::New { skipped: 0 });
    }
}

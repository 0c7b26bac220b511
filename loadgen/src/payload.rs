//! Message payloads that can be checked byte for byte.
//!
//! Each payload starts with its sequence number (8 bytes: little-endian for
//! binary, hexadecimal for text) followed by a window into a fixed
//! pseudo-random block whose offset also depends on the sequence number, so a
//! server that mixes up, truncates or corrupts messages is caught; checking is
//! a comparison of slices, cheap enough for the load generator's hot path.

use crate::options::{MessageType, PayloadKind};

const HEADER: usize = 8;
/// Offsets into the block vary over this many positions: a block of a few
/// KiB beyond the message stays in cache for every connection of a thread.
const SPREAD: usize = 4096;
/// With permessage-deflate, over this many: a compressor that keeps its
/// 32 KiB window from message to message (context takeover) would
/// otherwise find each message in the last ones, and compress even random
/// bytes to almost nothing. Over 1 MiB, a message rarely overlaps the window.
const SPREAD_DEFLATE: usize = 1 << 20;

pub struct Pattern {
    size: usize,
    spread: usize,
    message_type: MessageType,
    block: Vec<u8>,
}

/// The vocabulary of `--payload words`: text that DEFLATE shrinks to under
/// half (level 1), as it does JSON and prose.
const WORDS: [&str; 32] = [
    "the", "echo", "server", "message", "client", "socket", "frame", "buffer", "ring", "core",
    "latency", "rate", "of", "and", "to", "a", "in", "is", "it", "that", "for", "on", "with", "as",
    "was", "at", "by", "this", "from", "or", "an", "be",
];

impl Pattern {
    pub fn new(size: usize, message_type: MessageType) -> Self {
        Self::of(size, message_type, PayloadKind::Random, false)
    }

    /// `deflate`: messages are compressed, so they must not repeat each
    /// other within a compressor's window (see `SPREAD_DEFLATE`).
    pub fn of(size: usize, message_type: MessageType, kind: PayloadKind, deflate: bool) -> Self {
        let spread = if deflate { SPREAD_DEFLATE } else { SPREAD };
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        // xorshift64*: deterministic, so every run sends the same bytes.
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        };
        let len = size + spread;
        let block = match kind {
            PayloadKind::Random => (0..len)
                .map(|_| match message_type {
                    MessageType::Binary => next(),
                    MessageType::Text => b'a' + next() % 26,
                })
                .collect(),
            PayloadKind::Words => {
                let mut text = Vec::with_capacity(len + 16);
                while text.len() < len {
                    text.extend_from_slice(WORDS[next() as usize % WORDS.len()].as_bytes());
                    text.push(b' ');
                }
                text.truncate(len);
                text
            }
        };
        Pattern {
            size,
            spread,
            message_type,
            block,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn header(&self, seq: u64) -> [u8; HEADER] {
        match self.message_type {
            MessageType::Binary => seq.to_le_bytes(),
            MessageType::Text => {
                let mut out = [0u8; HEADER];
                let digits = b"0123456789abcdef";
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = digits[((seq >> (4 * (HEADER - 1 - i))) & 0xF) as usize];
                }
                out
            }
        }
    }

    fn body(&self, seq: u64) -> &[u8] {
        &self.block[self.body_range(seq)]
    }

    /// Where message `seq`'s body lies in [`Pattern::block`]. It starts at a
    /// multiple of 4 bytes, so the block masked once with a connection's key
    /// (byte i with key[i % 4]) holds every message's masked body: the body
    /// starts at payload byte 8 (a multiple of 4 too) and masking repeats
    /// every 4 bytes.
    pub fn body_range(&self, seq: u64) -> std::ops::Range<usize> {
        let header = HEADER.min(self.size);
        let offset = (seq.wrapping_mul(2_654_435_761) as usize) % (self.spread / 4) * 4;
        offset..offset + self.size - header
    }

    /// The bytes bodies are cut from.
    pub fn block(&self) -> &[u8] {
        &self.block
    }

    /// The first bytes of message `seq` (its sequence number): at most 8,
    /// fewer for smaller messages.
    pub fn head(&self, seq: u64) -> ([u8; HEADER], usize) {
        (self.header(seq), HEADER.min(self.size))
    }

    /// Writes the payload of message `seq` into `out` (cleared first).
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        let header = HEADER.min(self.size);
        out.extend_from_slice(&self.header(seq)[..header]);
        out.extend_from_slice(self.body(seq));
    }

    /// Whether `payload` is exactly the payload of message `seq`.
    pub fn matches(&self, seq: u64, payload: &[u8]) -> bool {
        let header = HEADER.min(self.size);
        payload.len() == self.size
            && payload[..header] == self.header(seq)[..header]
            && payload[header..] == *self.body(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_checks_against_its_own_sequence_only() {
        for message_type in [MessageType::Binary, MessageType::Text] {
            for size in [0, 1, 7, 8, 9, 20, 1024, 16384] {
                let pattern = Pattern::new(size, message_type);
                let mut buf = Vec::new();
                for seq in [0u64, 1, 2, 255, 256, 1 << 40] {
                    pattern.write(seq, &mut buf);
                    assert_eq!(buf.len(), size);
                    assert!(pattern.matches(seq, &buf));
                    if size >= 8 {
                        assert!(!pattern.matches(seq + 1, &buf), "seq {seq} size {size}");
                    }
                    if message_type == MessageType::Text {
                        assert!(std::str::from_utf8(&buf).is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn bodies_cut_from_a_block_masked_once_are_the_masked_bodies() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for size in [8, 9, 20, 1024, 16384] {
            let pattern = Pattern::new(size, MessageType::Binary);
            let masked: Vec<u8> = pattern
                .block()
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            let mut payload = Vec::new();
            for seq in [0u64, 1, 7, 1000, 1 << 33] {
                pattern.write(seq, &mut payload);
                let expected: Vec<u8> = payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i % 4])
                    .collect();
                let (head, n) = pattern.head(seq);
                assert_eq!(n, 8);
                assert_eq!(payload[..8], head);
                assert_eq!(
                    expected[8..],
                    masked[pattern.body_range(seq)],
                    "{size} B, seq {seq}"
                );
            }
        }
    }

    #[test]
    fn corruption_and_truncation_are_caught() {
        let pattern = Pattern::new(100, MessageType::Binary);
        let mut buf = Vec::new();
        pattern.write(42, &mut buf);
        for i in [0, 8, 50, 99] {
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert!(!pattern.matches(42, &bad), "flip at {i}");
        }
        assert!(!pattern.matches(42, &buf[..99]));
        let mut longer = buf.clone();
        longer.push(0);
        assert!(!pattern.matches(42, &longer));
    }

    /// What `--payload` promises of each kind, under a compressor that
    /// keeps its window from message to message as permessage-deflate's
    /// context takeover does (at level 1, as the engine and loadgen
    /// compress): random payloads do not shrink, words to under half.
    #[test]
    fn random_payloads_stay_incompressible_across_messages_and_words_shrink() {
        for (kind, size, at_least, at_most) in [
            // Level 1 codes random bytes with fixed Huffman codes: 5 %
            // larger than they came, never smaller.
            (PayloadKind::Random, 16384, 0.98, 1.06),
            (PayloadKind::Random, 1024, 0.98, 1.07),
            (PayloadKind::Words, 16384, 0.3, 0.5),
            (PayloadKind::Words, 1024, 0.3, 0.5),
        ] {
            let pattern = Pattern::of(size, MessageType::Binary, kind, true);
            let mut compressor = permessage_deflate::compressor(1, 15);
            let (mut payload, mut wire) = (Vec::new(), Vec::new());
            let mut total = 0;
            for seq in 0..20 {
                pattern.write(seq, &mut payload);
                wire.clear();
                permessage_deflate::deflate(&mut compressor, &payload, &mut wire);
                if seq >= 10 {
                    total += wire.len();
                }
            }
            let ratio = total as f64 / (10 * size) as f64;
            assert!(
                (at_least..=at_most).contains(&ratio),
                "{kind:?} {size} B: compressed to {ratio:.2} of its size"
            );
        }
    }
}

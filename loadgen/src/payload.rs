//! Message payloads that can be checked byte for byte.
//!
//! A generated payload starts with its sequence number (8 bytes:
//! little-endian for binary, hexadecimal for text) followed by a window
//! into a fixed pseudo-random block whose offset also depends on the
//! sequence number, so a server that mixes up, truncates or corrupts
//! messages is caught; checking is a comparison of slices, cheap enough for
//! the load generator's hot path. A payload file is sent as it is, or cycled
//! in slices: message k is the slice at k·size, wrapping round.

use std::sync::Arc;

use anyhow::Context;

use crate::options::{LoadConfig, MessageType, PayloadKind};

const HEADER: usize = 8;
/// Offsets into the block vary over this many positions: a block of a few
/// KiB beyond the message stays in cache for every connection of a thread.
const SPREAD: usize = 4096;
/// With permessage-deflate, over this many: a compressor that keeps its
/// 32 KiB window from message to message (context takeover) would
/// otherwise find each message in the last ones, and compress even random
/// bytes to almost nothing. Over 1 MiB, a message rarely overlaps the window.
const SPREAD_DEFLATE: usize = 1 << 20;

/// What a load's messages are made of. Cloning shares the block.
#[derive(Clone)]
pub struct Pattern {
    size: usize,
    /// Bytes of sequence number each message starts with: up to 8, none
    /// for a payload file.
    header: usize,
    /// Where bodies start: a generated payload's body at one of `spread`
    /// multiples of 4 picked by the sequence number; a file's slices at
    /// k·size modulo `cycle`, the file's length.
    bodies: Bodies,
    message_type: MessageType,
    block: Arc<[u8]>,
}

#[derive(Clone, Copy)]
enum Bodies {
    Spread(usize),
    Cycle(usize),
}

/// The vocabulary of `--payload words`: text that DEFLATE shrinks to under
/// half (level 1), as it does JSON and prose.
const WORDS: [&str; 32] = [
    "the", "echo", "server", "message", "client", "socket", "frame", "buffer", "ring", "core",
    "latency", "rate", "of", "and", "to", "a", "in", "is", "it", "that", "for", "on", "with", "as",
    "was", "at", "by", "this", "from", "or", "an", "be",
];

/// The characters of `--payload utf8`, by their length in UTF-8 less one:
/// Latin, Latin with accents and Cyrillic, CJK and the euro, emoji and
/// music (outside the Basic Multilingual Plane).
const CHARS: [&[char]; 4] = [
    &['a', 'b', 'c', 'x', 'y', 'z', '0', '9', ' ', '.'],
    &['é', 'ñ', 'ß', 'ж', 'Ω', 'ü'],
    &['€', '日', '本', '語', '가', 'ก'],
    &['😀', '🎉', '𝄞', '🚀'],
];

impl Pattern {
    pub fn new(size: usize, message_type: MessageType) -> Self {
        Self::of(size, message_type, PayloadKind::Random, false)
    }

    /// The pattern of `load` (normalized and validated: a text file's
    /// slices were checked there): its payload file's, read now, or a
    /// generated one.
    pub fn for_load(load: &LoadConfig) -> anyhow::Result<Pattern> {
        let Some(path) = &load.payload_file else {
            return Ok(Self::of(
                load.size,
                load.message_type,
                load.payload,
                load.deflate,
            ));
        };
        let file = std::fs::read(path)
            .with_context(|| format!("reading --payload-file {}", path.display()))?;
        anyhow::ensure!(
            !file.is_empty(),
            "--payload-file {} is empty now",
            path.display()
        );
        Ok(Self::from_file(&file, load.size, load.message_type))
    }

    /// Messages of `size` bytes cut from `file` in turn (`file` not empty).
    pub fn from_file(file: &[u8], size: usize, message_type: MessageType) -> Self {
        assert!(!file.is_empty(), "an empty payload file");
        // The file, then as much of it again as a slice that starts at its
        // last byte reaches: every slice is one range of the block.
        let block: Vec<u8> = file
            .iter()
            .copied()
            .cycle()
            .take(file.len() + size)
            .collect();
        Pattern {
            size,
            header: 0,
            bodies: Bodies::Cycle(file.len()),
            message_type,
            block: block.into(),
        }
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
        let header = HEADER.min(size);
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
            PayloadKind::Utf8 => {
                // Bodies start at multiples of 4 and are size − header
                // long, so they end r bytes into a group of 4: each group
                // is whole characters up to r, and whole from r to 4.
                let r = (size - header) % 4;
                let mut text = Vec::with_capacity(len + 4);
                let mut utf8 = [0u8; 4];
                while text.len() < len {
                    for mut part in [r, 4 - r] {
                        while part > 0 {
                            let width = 1 + next() as usize % part.min(4);
                            let choices = CHARS[width - 1];
                            let c = choices[next() as usize % choices.len()];
                            text.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                            part -= width;
                        }
                    }
                }
                text
            }
        };
        Pattern {
            size,
            header,
            bodies: Bodies::Spread(spread),
            message_type,
            block: block.into(),
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

    /// Message `seq`'s body: what follows its sequence number.
    fn body(&self, seq: u64) -> &[u8] {
        let offset = match self.bodies {
            Bodies::Spread(spread) => (seq.wrapping_mul(2_654_435_761) as usize) % (spread / 4) * 4,
            Bodies::Cycle(len) => {
                ((seq % len as u64) as u128 * self.size as u128 % len as u128) as usize
            }
        };
        &self.block[offset..offset + self.size - self.header]
    }

    /// Appends the payload of message `seq` to `out`.
    pub fn append(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header(seq)[..self.header]);
        out.extend_from_slice(self.body(seq));
    }

    /// Writes the payload of message `seq` into `out` (cleared first).
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        self.append(seq, out);
    }

    /// Whether `payload` is exactly the payload of message `seq`.
    pub fn matches(&self, seq: u64, payload: &[u8]) -> bool {
        payload.len() == self.size
            && payload[..self.header] == self.header(seq)[..self.header]
            && payload[self.header..] == *self.body(seq)
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
    fn utf8_payloads_are_whole_text_at_every_size() {
        for deflate in [false, true] {
            for size in (0..=40).chain([1000, 1001, 1002, 1003, 16384]) {
                let pattern = Pattern::of(size, MessageType::Text, PayloadKind::Utf8, deflate);
                let mut buf = Vec::new();
                let mut wide = 0;
                for seq in (0..200).chain([1 << 40]) {
                    pattern.write(seq, &mut buf);
                    assert_eq!(buf.len(), size);
                    let text = std::str::from_utf8(&buf)
                        .unwrap_or_else(|e| panic!("{size} B, seq {seq}: {e}"));
                    wide += text.chars().filter(|c| c.len_utf8() > 1).count();
                    assert!(pattern.matches(seq, &buf));
                }
                // Not ASCII in disguise: beyond the sequence number, most
                // characters are wider than a byte.
                if size >= 16 {
                    assert!(wide > 0, "{size} B: no character wider than a byte");
                }
            }
        }
    }

    #[test]
    fn a_file_is_sent_whole_or_cycled_in_slices() {
        let file = b"0123456789";
        let sent = |size: usize, seq: u64| {
            let pattern = Pattern::from_file(file, size, MessageType::Binary);
            let mut buf = Vec::new();
            pattern.write(seq, &mut buf);
            assert!(pattern.matches(seq, &buf));
            String::from_utf8(buf).unwrap()
        };
        for seq in [0, 1, 99] {
            assert_eq!(sent(10, seq), "0123456789");
        }
        let slices: Vec<String> = (0..4).map(|seq| sent(4, seq)).collect();
        assert_eq!(slices, ["0123", "4567", "8901", "2345"]);
        assert_eq!(sent(4, 5), "0123", "five slices of 4 go round twice");
        assert_eq!(sent(25, 1), "5678901234567890123456789");
        assert_eq!(sent(3, u64::MAX), sent(3, u64::MAX % 10));
        // Checking stays exact: another slice, or a changed byte, fails.
        let pattern = Pattern::from_file(file, 4, MessageType::Binary);
        assert!(!pattern.matches(0, b"4567"));
        assert!(!pattern.matches(0, b"0124"));
        assert!(!pattern.matches(0, b"012"));
    }

    #[test]
    fn text_files_are_cut_only_between_characters() {
        use crate::options::text_slices_are_whole;
        let file = "ééééé".as_bytes(); // 10 bytes, characters of 2
        assert!(text_slices_are_whole(file, 10).is_ok());
        assert!(text_slices_are_whole(file, 4).is_ok());
        assert!(text_slices_are_whole(file, 6).is_ok());
        let odd = text_slices_are_whole(file, 3).unwrap_err();
        assert!(odd.contains("byte 1") && odd.contains("10 bytes"), "{odd}");
        let pattern = Pattern::from_file(file, 4, MessageType::Text);
        let mut buf = Vec::new();
        for seq in 0..10 {
            pattern.write(seq, &mut buf);
            assert!(std::str::from_utf8(&buf).is_ok());
        }
        let binary = text_slices_are_whole(&[b'a', 0xff], 2).unwrap_err();
        assert!(binary.contains("not UTF-8"), "{binary}");
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

//! permessage-deflate (RFC 7692) for both ends of a WebSocket: the engine
//! answers offers and the load generator makes them, and both compress and
//! inflate whole messages the same way.
//!
//! A message's DEFLATE data is compressed with a sync flush and sent
//! without the 00 00 ff ff that ends it; the receiver puts it back before
//! inflating (§7.2.1, §7.2.2). Inflating stops one byte past the caller's
//! limit, so that a small message that would inflate to gigabytes costs at
//! most the limit.

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

pub use flate2::{Compress as Compressor, Compression, Decompress as Decompressor};

/// The extension's name in Sec-WebSocket-Extensions.
pub const NAME: &str = "permessage-deflate";
/// The tail of every message's DEFLATE data, removed before it is sent.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Inflated in steps of at most this many bytes, each checked against the
/// limit before the buffer grows again.
const INFLATE_STEP: usize = 64 * 1024;

/// The parameters of one offer or answer (§7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// 8 to 15.
    pub server_max_window_bits: Option<u8>,
    /// Present, with or without a value (an offer may leave it out).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Parses one element of Sec-WebSocket-Extensions
/// (`permessage-deflate; param; param=value`). `None` for another
/// extension, or one that must be declined (§5.1): an unknown parameter, a
/// parameter twice, a value where none belongs or a bad one.
pub fn parse(element: &str) -> Option<Params> {
    let mut parts = element.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut params = Params::default();
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                params.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                params.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                params.server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                params.client_max_window_bits = Some(match value {
                    Some(value) => Some(window_bits(value)?),
                    None => None,
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(params)
}

/// A parameter value, quoted or not (§5.1: the same token either way).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// 8 to 15, in decimal without leading zeros (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.len() > 2 {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Why a message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit.
    TooBig,
    /// It is not DEFLATE data.
    BadData(&'static str),
}

/// A compressor for raw DEFLATE with a window of 2^`window_bits` bytes (9 to
/// 15: zlib cannot compress with 8).
pub fn compressor(level: u32, window_bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, window_bits)
}

/// A decompressor for raw DEFLATE written with a window of up to
/// 2^`window_bits` bytes.
pub fn decompressor(window_bits: u8) -> Decompress {
    Decompress::new_with_window_bits(false, window_bits)
}

/// Inflates a whole message's DEFLATE data (without its tail), appending it
/// to `out`; refuses it past `max` bytes of output.
pub fn inflate(
    inflater: &mut Decompress,
    data: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), InflateError> {
    let start = out.len();
    // The buffer grows by doubling, but never past one byte over the limit
    // (which tells a message at the limit from one over it).
    let ceiling = start + max + 1;
    for input in [data, &TAIL[..]] {
        let mut input = input;
        loop {
            if out.len() > start + max {
                return Err(InflateError::TooBig);
            }
            if out.len() == out.capacity() {
                let want = (out.capacity() * 2)
                    .max(out.len() + INFLATE_STEP)
                    .min(ceiling);
                out.reserve_exact(want - out.len());
            }
            let before = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::BadData("invalid DEFLATE data"))?;
            let read = (inflater.total_in() - before.0) as usize;
            let wrote = inflater.total_out() - before.1;
            input = &input[read..];
            if status == Status::StreamEnd {
                // A final block: nothing may follow it in the message.
                if !input.is_empty() {
                    return Err(InflateError::BadData("data after the final DEFLATE block"));
                }
                break;
            }
            let full = out.len() == out.capacity();
            if input.is_empty() && !full {
                break;
            }
            if read == 0 && wrote == 0 && !full {
                return Err(InflateError::BadData("invalid DEFLATE data"));
            }
        }
    }
    if out.len() > start + max {
        return Err(InflateError::TooBig);
    }
    Ok(())
}

/// Compresses a whole message, appending its DEFLATE data without the tail
/// to `out`.
pub fn deflate(compressor: &mut Compress, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // Compressed data is rarely much larger than its input; a sync flush
    // adds a few bytes.
    out.reserve(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = compressor.total_in();
        compressor
            .compress_vec(input, out, FlushCompress::Sync)
            .expect("deflate on valid memory cannot fail");
        input = &input[(compressor.total_in() - before) as usize..];
        // Done when all input is in and the flush fit (room was left).
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    if out[start..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_and_bad_ones_refused() {
        assert_eq!(parse("permessage-deflate"), Some(Params::default()));
        assert_eq!(
            parse("permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\""),
            Some(Params {
                server_max_window_bits: Some(10),
                client_max_window_bits: Some(None),
                ..Params::default()
            })
        );
        assert_eq!(
            parse(" Permessage-Deflate ;server_no_context_takeover; client_no_context_takeover ; client_max_window_bits=9"),
            Some(Params {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: None,
                client_max_window_bits: Some(Some(9)),
            })
        );
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=\"9",
            "permessage-deflate; client_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    fn roundtrip(takeover: bool, bits: u8, messages: &[Vec<u8>]) {
        let mut compress = compressor(1, bits);
        let mut inflater = decompressor(bits);
        for message in messages {
            let mut wire = Vec::new();
            deflate(&mut compress, message, &mut wire);
            let mut back = vec![0xAA; 3];
            inflate(&mut inflater, &wire, &mut back, 1 << 20).unwrap();
            assert_eq!(&back[..3], &[0xAA; 3]);
            assert_eq!(&back[3..], &message[..]);
            if !takeover {
                compress.reset();
                inflater.reset(false);
            }
        }
    }

    #[test]
    fn messages_come_back_whole_with_and_without_context_takeover() {
        let text: Vec<u8> = "the same words again and again, ".repeat(700).into_bytes();
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let messages = vec![Vec::new(), b"hi".to_vec(), text.clone(), noise, text];
        for (takeover, bits) in [(true, 15), (false, 15), (true, 9), (false, 12)] {
            roundtrip(takeover, bits, &messages);
        }
    }

    #[test]
    fn inflating_past_the_limit_stops_before_the_memory_is_spent() {
        // 64 MiB of zeros compress to about 640 KiB at level 1.
        let mut wire = Vec::new();
        deflate(&mut compressor(1, 15), &vec![0u8; 64 << 20], &mut wire);
        assert!(wire.len() < 1 << 20, "{}", wire.len());
        let mut out = Vec::new();
        let refused = inflate(&mut decompressor(15), &wire, &mut out, 1 << 20);
        assert_eq!(refused, Err(InflateError::TooBig));
        assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
        // Exactly at the limit is fine, one byte less is not.
        let mut wire = Vec::new();
        deflate(&mut compressor(1, 15), &[7; 1000], &mut wire);
        assert!(inflate(&mut decompressor(15), &wire, &mut Vec::new(), 1000).is_ok());
        assert_eq!(
            inflate(&mut decompressor(15), &wire, &mut Vec::new(), 999),
            Err(InflateError::TooBig)
        );
    }

    #[test]
    fn garbage_is_refused() {
        let refused = inflate(&mut decompressor(15), &[0xff; 32], &mut Vec::new(), 1 << 20);
        assert!(matches!(refused, Err(InflateError::BadData(_))));
    }
}

//! permessage-deflate (RFC 7692): the offer's negotiation, and the
//! compression of whole messages.
//!
//! Off by default, as in ASP.NET Core (`--deflate`). Two ways to spend
//! memory, as uWebSockets offers them:
//! - `shared`: the engine answers every offer with server_no_context_takeover
//!   and client_no_context_takeover, so each message is compressed on its
//!   own and no connection keeps a window: one compressor and one
//!   decompressor per worker thread serve all its connections.
//! - `dedicated`: the sliding windows are kept from message to message
//!   (better ratios on similar messages), in contexts of each connection's
//!   own: about 256 KiB to compress at 15 window bits, 32 KiB to inflate
//!   (zlib's formula, [`context_bytes`]), counted in /stats.
//!
//! A compressed message is assembled whole, then inflated in bounded steps:
//! --max-message-size applies to the inflated size, so a small message that
//! would inflate to gigabytes is refused (1009) after at most that much.

use std::cell::RefCell;

use http::header::{self, HeaderMap};
use permessage_deflate::{self as pmd, Compressor, Decompressor, InflateError};
use serde::Serialize;

use crate::codec::Violation;

/// `--deflate`: whether permessage-deflate offers are accepted, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Offers are declined (the answer has no Sec-WebSocket-Extensions).
    #[default]
    Off,
    /// Accepted without context takeover: one compressor per worker.
    Shared,
    /// Accepted with context takeover: contexts of each connection's own.
    Dedicated,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shared => "shared",
            Mode::Dedicated => "dedicated",
        }
    }
}

/// The parameters in force on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The window the engine compresses with (9 to 15).
    pub server_max_window_bits: u8,
}

/// zlib's level 1: the cost users compare is the engine's, and echoed
/// payloads are not stored anywhere.
const LEVEL: u32 = 1;

/// Picks the first offer in the request's Sec-WebSocket-Extensions that the
/// engine supports, and returns what was agreed with the answer's header
/// value. `None`: every offer is declined (or none was made).
pub fn negotiate(headers: &HeaderMap, mode: Mode) -> Option<(Agreed, String)> {
    if mode == Mode::Off {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offer| accept(pmd::parse(offer)?, mode))
}

/// An offer accepted, or declined (`None`) when the engine cannot honour it.
fn accept(offer: pmd::Params, mode: Mode) -> Option<(Agreed, String)> {
    // zlib cannot compress with a 256-byte window (it uses 512): an offer
    // that asks for 8 is declined rather than broken.
    if offer.server_max_window_bits == Some(8) {
        return None;
    }
    let shared = mode == Mode::Shared;
    let agreed = Agreed {
        server_no_context_takeover: offer.server_no_context_takeover || shared,
        // Asked of the client in shared mode, so that one decompressor can
        // serve every connection (§7.1.1.2 lets a server ask it unasked);
        // otherwise the client's offer of it is a hint, and the engine
        // keeps its window.
        client_no_context_takeover: shared,
        server_max_window_bits: offer.server_max_window_bits.unwrap_or(15),
    };
    // client_max_window_bits is never answered: the engine inflates with
    // the largest window, whatever the client compresses with.
    let mut answer = String::from(pmd::NAME);
    if agreed.server_no_context_takeover {
        answer.push_str("; server_no_context_takeover");
    }
    if agreed.client_no_context_takeover {
        answer.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = offer.server_max_window_bits {
        answer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some((agreed, answer))
}

/// Memory of one context, by zlib's own formula (zconf.h): deflate takes
/// (1 << (windowBits + 2)) + (1 << (memLevel + 9)) bytes, memLevel 8 being
/// what flate2 asks for; inflate 1 << windowBits, plus about 7 KiB of state.
pub fn context_bytes(compress_window_bits: Option<u8>, inflate: bool) -> u64 {
    let deflate = compress_window_bits.map_or(0, |bits| (1u64 << (bits + 2)) + (1 << (8 + 9)));
    let inflate = if inflate { (1u64 << 15) + 7 * 1024 } else { 0 };
    deflate + inflate
}

/// Compression state of one connection: what is not shared.
pub struct Contexts {
    agreed: Agreed,
    /// Kept from message to message (context takeover), created on first use.
    compress: Option<Compressor>,
    decompress: Option<Decompressor>,
}

thread_local! {
    /// The worker's shared contexts, reset after every message: a
    /// compressor per window size asked for, and one decompressor.
    static SHARED: RefCell<Shared> = RefCell::new(Shared::default());
}

#[derive(Default)]
struct Shared {
    compress: [Option<Compressor>; 16],
    decompress: Option<Decompressor>,
}

impl Contexts {
    pub fn new(agreed: Agreed) -> Self {
        Contexts {
            agreed,
            compress: None,
            decompress: None,
        }
    }

    /// Bytes of context memory this connection holds of its own now.
    pub fn bytes(&self) -> u64 {
        context_bytes(
            self.compress
                .as_ref()
                .map(|_| self.agreed.server_max_window_bits),
            self.decompress.is_some(),
        )
    }

    /// Inflates a whole message's DEFLATE data (without its tail) into
    /// `out`, which may already hold a prefix; refuses it past `max` bytes
    /// of output.
    pub fn inflate(&mut self, data: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), Violation> {
        let inflated = if self.agreed.client_no_context_takeover {
            SHARED.with_borrow_mut(|shared| {
                let inflater = shared
                    .decompress
                    .get_or_insert_with(|| pmd::decompressor(15));
                // Reset before, too: a message refused half way leaves
                // its state behind.
                inflater.reset(false);
                pmd::inflate(inflater, data, out, max)
            })
        } else {
            let inflater = self.decompress.get_or_insert_with(|| pmd::decompressor(15));
            pmd::inflate(inflater, data, out, max)
        };
        inflated.map_err(|e| match e {
            InflateError::TooBig => Violation::TooBig,
            InflateError::BadData(why) => Violation::BadData(why),
        })
    }

    /// Compresses `payload` into `out` (appended), without the tail.
    pub fn deflate(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let bits = self.agreed.server_max_window_bits;
        if self.agreed.server_no_context_takeover {
            SHARED.with_borrow_mut(|shared| {
                let compressor = shared.compress[bits as usize]
                    .get_or_insert_with(|| pmd::compressor(LEVEL, bits));
                pmd::deflate(compressor, payload, out);
                compressor.reset();
            })
        } else {
            let compressor = self
                .compress
                .get_or_insert_with(|| pmd::compressor(LEVEL, bits));
            pmd::deflate(compressor, payload, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(header::SEC_WEBSOCKET_EXTENSIONS, value.parse().unwrap());
        headers
    }

    fn answer(value: &str, mode: Mode) -> Option<String> {
        negotiate(&offer(value), mode).map(|(_, answer)| answer)
    }

    #[test]
    fn offers_are_accepted_or_declined_as_rfc_7692_says() {
        use Mode::*;
        // What Chromium and Firefox send.
        let browser = "permessage-deflate; client_max_window_bits";
        assert_eq!(answer(browser, Off), None);
        assert_eq!(
            answer(browser, Dedicated).as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            answer(browser, Shared).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        // Parameters the engine honours.
        assert_eq!(
            answer(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
                Dedicated
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        );
        // Declined: bad offers (see permessage_deflate::parse) and a window of 8.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(answer(bad, Dedicated), None, "{bad}");
        }
        // The first acceptable offer wins, across header lines too.
        assert_eq!(
            answer(
                "permessage-deflate; foo, permessage-deflate; server_max_window_bits=12",
                Dedicated
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=12")
        );
        let mut two_lines = offer("permessage-deflate; bar");
        two_lines.append(
            header::SEC_WEBSOCKET_EXTENSIONS,
            "permessage-deflate".parse().unwrap(),
        );
        let (agreed, _) = negotiate(&two_lines, Dedicated).unwrap();
        assert_eq!(agreed.server_max_window_bits, 15);
    }

    #[test]
    fn shared_and_dedicated_contexts_both_echo_and_only_dedicated_ones_are_held() {
        let text = b"the same words again and again, ".repeat(300);
        for no_takeover in [false, true] {
            let agreed = Agreed {
                server_no_context_takeover: no_takeover,
                client_no_context_takeover: no_takeover,
                server_max_window_bits: 11,
            };
            let mut contexts = Contexts::new(agreed);
            // What the engine compressed, read back by an inflater that
            // keeps its window exactly when the compressor does.
            let mut reader = Contexts::new(Agreed {
                client_no_context_takeover: no_takeover,
                ..agreed
            });
            for _ in 0..3 {
                let mut wire = Vec::new();
                contexts.deflate(&text, &mut wire);
                let mut back = Vec::new();
                reader.inflate(&wire, &mut back, 1 << 20).unwrap();
                assert_eq!(back, text);
            }
            let held = contexts.bytes();
            assert_eq!(held == 0, no_takeover, "{held}");
        }
        assert_eq!(context_bytes(Some(15), true), 256 * 1024 + 39 * 1024);
    }

    #[test]
    fn errors_carry_their_close_codes() {
        let mut contexts = Contexts::new(Agreed {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
        });
        let refused = contexts.inflate(&[0xff; 32], &mut Vec::new(), 1 << 20);
        assert_eq!(refused.map_err(Violation::close_code), Err(1007));
        let mut wire = Vec::new();
        contexts.deflate(&[0; 5000], &mut wire);
        let refused = contexts.inflate(&wire, &mut Vec::new(), 4999);
        assert_eq!(refused.map_err(Violation::close_code), Err(1009));
    }
}

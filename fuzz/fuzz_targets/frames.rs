//! The WebSocket session's frame handling over receive buffers: arbitrary
//! bytes, delivered in reads of arbitrary sizes into a small buffer, as the
//! io_uring driver delivers them. Nothing may panic; every answer must be a
//! well-formed server frame sequence. Half the inputs run with
//! permessage-deflate agreed (shared or dedicated contexts), so that RSV1
//! frames are inflated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringecho::deflate::Agreed;
use ringecho::driver::Out;
use ringecho::session::{Phase, RawEcho, Session};
use ringecho::stats::WorkerStats;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let capacity = 256 + cut as usize * 16;
    let read_size = 1 + (cut as usize % 97);
    let stats = WorkerStats::default();
    let echo = RawEcho {
        stats: &stats,
        keep_alive: None,
    };
    let mut session = Session::new(&echo, capacity, 1 << 20);
    if cut & 0x80 != 0 {
        let no_takeover = cut & 0x40 != 0;
        session.set_deflate(Agreed {
            server_no_context_takeover: no_takeover,
            client_no_context_takeover: no_takeover,
            server_max_window_bits: 9 + (cut & 7).min(6),
        });
    }
    let mut buf = vec![0u8; capacity];
    let mut filled = 0;
    let mut out = Vec::new();
    let mut input = input;
    while session.phase() != Phase::Done && (!input.is_empty() || filled > 0) {
        let n = read_size.min(capacity - filled).min(input.len());
        buf[filled..filled + n].copy_from_slice(&input[..n]);
        input = &input[n..];
        filled += n;
        let consumed = session.on_bytes(&mut buf[..filled], &mut out);
        assert!(consumed <= filled);
        for piece in out.drain(..) {
            let frame: &[u8] = match &piece {
                Out::Recv(range) => &buf[range.clone()],
                Out::Owned(bytes, start) => &bytes[*start..],
            };
            // A server frame: final, unmasked, its length as announced,
            // RSV1 only with deflate.
            assert!(frame.len() >= 2 && frame[0] & 0x80 != 0 && frame[1] & 0x80 == 0);
            assert!(frame[0] & 0x40 == 0 || cut & 0x80 != 0);
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if n == 0 && consumed == 0 {
            break;
        }
    }
});

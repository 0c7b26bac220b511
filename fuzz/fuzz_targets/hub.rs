//! The hub protocol's message handling, in both encodings: arbitrary bytes
//! split into WebSocket messages at arbitrary points, after a JSON or a
//! MessagePack handshake (or none). Nothing may panic.
#![no_main]

use fastwebsockets::OpCode;
use libfuzzer_sys::fuzz_target;
use ringecho::hub::{HubSession, HubWorker, Inbox};
use ringecho::session::Handler;
use ringecho::stats::WorkerStats;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let stats = WorkerStats::default();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = HubSession::new(HubWorker::new(vec![Inbox { channel: tx, doorbell: None }]), &stats, None, 1 << 16, 1 << 20);
    // Start with a valid handshake half the time, to reach the messages:
    // JSON or MessagePack, by the next bit.
    let mut handshake = if cut & 2 == 2 {
        b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec()
    } else {
        b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec()
    };
    let mut out = Vec::new();
    if cut & 1 == 1 {
        let len = handshake.len();
        let _ = hub.on_message(OpCode::Text, &mut handshake, 0..len, &mut out);
    }
    for chunk in input.chunks(1 + cut as usize) {
        let mut message = chunk.to_vec();
        let len = message.len();
        if hub
            .on_message(OpCode::Text, &mut message, 0..len, &mut out)
            .is_err()
        {
            break;
        }
    }
});

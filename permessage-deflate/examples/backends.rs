//! Which DEFLATE backend: zlib-rs (through flate2, what the crate uses)
//! against miniz_oxide (flate2's default backend, called directly), both at
//! level 1, compressing one message with a sync flush and inflating it back
//! with each message's context kept (as with context takeover). Prints
//! nanoseconds per message and the compressed size, for the sizes bench
//! uses and for text DEFLATE shrinks (words) and bytes it cannot (random).
//!
//! Run: cargo run --release -p permessage-deflate --example backends
//! (results/deflate.md holds a run and the choice it made).

use std::hint::black_box;
use std::time::Instant;

use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush,
};
use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush};

fn payload(kind: &str, size: usize) -> Vec<u8> {
    let words = [
        "the", "echo", "server", "message", "client", "socket", "frame", "buffer", "ring", "core",
        "latency", "rate", "of", "and", "to", "a", "in", "is", "it", "that", "for", "on", "with",
        "as", "was", "at", "by", "this", "from", "or", "an", "be",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    };
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        match kind {
            "words" => {
                out.extend_from_slice(words[next() as usize % words.len()].as_bytes());
                out.push(b' ');
            }
            _ => out.push(next()),
        }
    }
    out.truncate(size);
    out
}

/// (ns per message, compressed bytes) for zlib-rs.
fn zlib_rs(messages: &[Vec<u8>]) -> (f64, usize) {
    let mut compressor = permessage_deflate::compressor(1, 15);
    let mut inflater = permessage_deflate::decompressor(15);
    let (mut wire, mut back) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let start = Instant::now();
    for message in messages {
        wire.clear();
        back.clear();
        permessage_deflate::deflate(&mut compressor, message, &mut wire);
        permessage_deflate::inflate(&mut inflater, &wire, &mut back, 1 << 20).unwrap();
        assert_eq!(&back, message);
        bytes += wire.len();
    }
    let ns = start.elapsed().as_nanos() as f64 / messages.len() as f64;
    (ns, bytes / messages.len())
}

/// (ns per message, compressed bytes) for miniz_oxide.
fn miniz(messages: &[Vec<u8>]) -> (f64, usize) {
    let flags = create_comp_flags_from_zip_params(1, -15, 0);
    let mut compressor = CompressorOxide::new(flags);
    let mut inflater = InflateState::new_boxed(DataFormat::Raw);
    let mut wire = vec![0u8; 1 << 20];
    let mut back = vec![0u8; 1 << 20];
    let mut bytes = 0;
    let start = Instant::now();
    for message in messages {
        let (_, read, written) = compress(&mut compressor, message, &mut wire, TDEFLFlush::Sync);
        assert_eq!(read, message.len());
        let n = written - 4; // the 00 00 ff ff tail, as RFC 7692 sends it
        wire[n..n + 4].copy_from_slice(&permessage_deflate::TAIL);
        let result = inflate(&mut inflater, &wire[..n + 4], &mut back, MZFlush::Sync);
        assert_eq!(&back[..result.bytes_written], &message[..]);
        bytes += n;
    }
    let ns = start.elapsed().as_nanos() as f64 / messages.len() as f64;
    black_box(&back);
    (ns, bytes / messages.len())
}

fn main() {
    println!("| payload | size | zlib-rs ns/msg | miniz_oxide ns/msg | miniz/zlib-rs | compressed (zlib-rs / miniz) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for kind in ["words", "random"] {
        for size in [20usize, 1024, 16384] {
            let count = (40 << 20) / (size + 256);
            // Different messages, as loadgen sends with --deflate: windows
            // of a 1 MiB text at scattered offsets, so that a message is
            // rarely in the last 32 KiB the compressor keeps.
            let source = payload(kind, size + (1 << 20));
            let messages: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let at = (i as u64).wrapping_mul(2_654_435_761) as usize % (1 << 18) * 4;
                    source[at..][..size].to_vec()
                })
                .collect();
            // Warm up both, then alternate five rounds each; the medians.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            zlib_rs(&messages[..count / 10]);
            miniz(&messages[..count / 10]);
            let mut sizes = (0, 0);
            for _ in 0..5 {
                let (ns, bytes) = zlib_rs(&messages);
                a.push(ns);
                sizes.0 = bytes;
                let (ns, bytes) = miniz(&messages);
                b.push(ns);
                sizes.1 = bytes;
            }
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            println!(
                "| {kind} | {size} | {:.0} | {:.0} | {:.2}× | {} / {} B |",
                a[2],
                b[2],
                b[2] / a[2],
                sizes.0,
                sizes.1
            );
        }
    }
}

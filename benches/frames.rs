//! The frame path of one echo, per message and per byte: parse the client's
//! header, unmask the payload in place, write the server's header (text is
//! also checked as UTF-8), at 20 B, 1 KiB, 16 KiB and 1 MiB.
//!
//! - `ringecho`: the engine's own [`Session::on_bytes`] with the raw echo
//!   handler over a receive buffer holding one masked frame, exactly what a
//!   worker runs for a message that arrived whole.
//! - `fastwebsockets`: the reference, its `WebSocket::read_frame` then
//!   `write_frame` (server role) over an in-memory stream that serves the same
//!   frame again and again and discards what is written.
//!
//! Both restore the masked frame on every iteration (one copy of the message,
//! as a socket read would make), so the difference is the frame handling.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastwebsockets::{Frame, OpCode};
use ringecho::driver::Out;
use ringecho::session::{RawEcho, Session};
use ringecho::stats::WorkerStats;

#[path = "common.rs"]
mod common;
use common::{client_frame, reference_server};

const SIZES: [usize; 4] = [20, 1024, 16 << 10, 1 << 20];

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo frame path");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let stats = WorkerStats::default();
    let echo = RawEcho {
        stats: &stats,
        keep_alive: None,
    };
    for size in SIZES {
        let frame = client_frame(2, &(0..size).map(|i| i as u8).collect::<Vec<u8>>());
        group.throughput(Throughput::Bytes(size as u64));

        let mut session = Session::new(&echo, frame.len(), 64 << 20);
        let mut buf = frame.clone();
        let mut out: Vec<Out> = Vec::with_capacity(4);
        group.bench_function(BenchmarkId::new("ringecho", size), |b| {
            b.iter(|| {
                buf.copy_from_slice(&frame);
                let consumed = session.on_bytes(black_box(&mut buf), &mut out);
                assert_eq!(consumed, frame.len());
                black_box(&out);
                out.clear();
            })
        });

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut ws = reference_server(frame.clone());
        group.bench_function(BenchmarkId::new("fastwebsockets", size), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let frame = ws.read_frame().await.unwrap();
                        assert_eq!(frame.opcode, OpCode::Binary);
                        // Sent back as a server frame: no mask.
                        let echo = Frame::new(frame.fin, frame.opcode, None, frame.payload);
                        ws.write_frame(echo).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);

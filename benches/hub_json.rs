//! The hub's JSON cost: parse an `Echo` invocation and write its Completion,
//! at 20 B, 1 KiB and 16 KiB of payload. `engine` is the engine's own path
//! (serde_json with the argument kept as raw JSON, through a real
//! HubSession, reply frame included); the others do only the parse and the
//! answer record, with serde_json, sonic-rs and simd-json: the evidence the
//! engine's choice of crate rests on.
//!
//! A second group takes the whole frame path of a hub Echo, from the client's
//! masked text frame to the Completion's server frame: `ringecho` is the
//! engine's `Session` with its `HubSession` handler over a receive buffer;
//! `fastwebsockets` is the reference, its `read_frame`, the same serde_json
//! parse and answer, and `write_frame`, over an in-memory stream.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastwebsockets::{Frame, OpCode, Payload};
use ringecho::driver::Out;
use ringecho::hub::{HubSession, HubWorker, Inbox};
use ringecho::session::{Handler, Session};
use ringecho::stats::WorkerStats;
use serde::Deserialize;

#[path = "common.rs"]
mod common;
use common::{client_frame, reference_server};

const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";

fn invocation(size: usize) -> Vec<u8> {
    let payload: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    format!("{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{payload}\"],\"invocationId\":\"12345\"}}\x1e")
        .into_bytes()
}

#[derive(Deserialize)]
struct SerdeMessage<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "invocationId")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Vec<&'a serde_json::value::RawValue>>,
}

fn serde_answer(record: &[u8], out: &mut Vec<u8>) {
    let message: SerdeMessage = serde_json::from_slice(record).unwrap();
    assert_eq!((message.kind, message.target.as_deref()), (1, Some("Echo")));
    let arguments = message.arguments.unwrap();
    let id = serde_json::to_string(message.id.as_deref().unwrap()).unwrap();
    out.clear();
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(arguments[0].get().as_bytes());
    out.extend_from_slice(b"}\x1e");
}

#[derive(Deserialize)]
struct SonicMessage<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "invocationId")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Vec<sonic_rs::LazyValue<'a>>>,
}

fn sonic_answer(record: &[u8], out: &mut Vec<u8>) {
    let message: SonicMessage = sonic_rs::from_slice(record).unwrap();
    assert_eq!((message.kind, message.target.as_deref()), (1, Some("Echo")));
    let arguments = message.arguments.unwrap();
    let id = sonic_rs::to_string(message.id.as_deref().unwrap()).unwrap();
    out.clear();
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(arguments[0].as_raw_str().as_bytes());
    out.extend_from_slice(b"}\x1e");
}

fn simd_answer(record: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    use simd_json::prelude::*;
    // simd-json parses in place: the record must be copied first.
    scratch.clear();
    scratch.extend_from_slice(record);
    let value = simd_json::to_borrowed_value(scratch).unwrap();
    assert_eq!(value.get("target").and_then(|t| t.as_str()), Some("Echo"));
    let id = value.get("invocationId").and_then(|i| i.as_str()).unwrap();
    let argument = &value.get("arguments").and_then(|a| a.as_array()).unwrap()[0];
    out.clear();
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    out.extend_from_slice(simd_json::to_string(&id).unwrap().as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(simd_json::to_string(argument).unwrap().as_bytes());
    out.extend_from_slice(b"}\x1e");
}

fn hub_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub Echo: parse + answer");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let stats = WorkerStats::default();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = HubSession::new(
        HubWorker::new(vec![Inbox {
            channel: tx,
            doorbell: None,
        }]),
        &stats,
        None,
        64 << 20,
        4 << 20,
    );
    let mut out = Vec::new();
    let mut handshake = HANDSHAKE.to_vec();
    let len = handshake.len();
    hub.on_message(OpCode::Text, &mut handshake, 0..len, &mut out)
        .unwrap();

    for size in [20usize, 1024, 16 * 1024] {
        let record = invocation(size);
        group.throughput(Throughput::Bytes(record.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("engine (serde_json, raw value, framed)", size),
            &record,
            |b, record| {
                let mut buf = record.clone();
                let len = buf.len();
                b.iter(|| {
                    let mut out = Vec::with_capacity(1);
                    hub.on_message(OpCode::Text, &mut buf, 0..len, &mut out)
                        .unwrap();
                    black_box(match &out[0] {
                        Out::Owned(frame, start) => frame.len() - start,
                        Out::Recv(range) => range.len(),
                    })
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json (raw value)", size),
            &record,
            |b, record| {
                let mut answer = Vec::new();
                b.iter(|| {
                    serde_answer(&record[..record.len() - 1], &mut answer);
                    black_box(answer.len())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("sonic-rs (lazy value)", size),
            &record,
            |b, record| {
                let mut answer = Vec::new();
                b.iter(|| {
                    sonic_answer(&record[..record.len() - 1], &mut answer);
                    black_box(answer.len())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("simd-json (borrowed value)", size),
            &record,
            |b, record| {
                let (mut scratch, mut answer) = (Vec::new(), Vec::new());
                b.iter(|| {
                    simd_answer(&record[..record.len() - 1], &mut scratch, &mut answer);
                    black_box(answer.len())
                })
            },
        );
    }
    group.finish();
}

fn hub_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub Echo frame path");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500));
    let stats = WorkerStats::default();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for size in [20usize, 1024, 16 * 1024] {
        // A connection of its own per size: the handshake comes first.
        let hub = HubSession::new(
            HubWorker::new(vec![Inbox {
                channel: tx.clone(),
                doorbell: None,
            }]),
            &stats,
            None,
            64 << 20,
            4 << 20,
        );
        let frame = client_frame(1, &invocation(size));
        group.throughput(Throughput::Bytes(size as u64));

        let mut session = Session::new(&hub, frame.len(), 64 << 20);
        let mut out: Vec<Out> = Vec::with_capacity(4);
        let mut handshake = client_frame(1, HANDSHAKE);
        session.on_bytes(&mut handshake, &mut out);
        out.clear();
        let mut buf = frame.clone();
        group.bench_function(BenchmarkId::new("ringecho", size), |b| {
            b.iter(|| {
                buf.copy_from_slice(&frame);
                let consumed = session.on_bytes(black_box(&mut buf), &mut out);
                assert_eq!((consumed, out.len()), (frame.len(), 1));
                black_box(&out);
                out.clear();
            })
        });

        let mut ws = reference_server(frame.clone());
        let mut answer = Vec::new();
        group.bench_function(BenchmarkId::new("fastwebsockets + serde_json", size), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let frame = ws.read_frame().await.unwrap();
                        assert_eq!(frame.opcode, OpCode::Text);
                        let record = &frame.payload[..frame.payload.len() - 1];
                        serde_answer(record, &mut answer);
                        let reply = Frame::text(Payload::Borrowed(&answer));
                        ws.write_frame(reply).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hub_json, hub_frames);
criterion_main!(benches);

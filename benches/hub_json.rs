//! The hub's JSON cost: parse an `Echo` invocation and write its Completion,
//! at 20 B, 1 KiB and 16 KiB of payload. `engine` is the engine's own path
//! (serde_json with the argument kept as raw JSON, through a real
//! HubSession, reply frame included); the others do only the parse and the
//! answer record, with serde_json, sonic-rs and simd-json: the evidence the
//! engine's choice of crate rests on.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastwebsockets::OpCode;
use ringecho::driver::Out;
use ringecho::hub::{HubSession, HubWorker};
use ringecho::session::Handler;
use ringecho::stats::WorkerStats;
use serde::Deserialize;

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
    let hub = HubSession::new(HubWorker::new(vec![tx]), &stats, None, 64 << 20, 4 << 20);
    let mut out = Vec::new();
    let mut handshake = b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec();
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

criterion_group!(benches, hub_json);
criterion_main!(benches);

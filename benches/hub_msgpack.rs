//! The hub's MessagePack cost: read an `Echo` invocation and write its
//! Completion, at 20 B, 1 KiB and 16 KiB of payload (a string). `engine` is
//! the engine's reader (`rmp`'s markers, the argument kept as the bytes it
//! came in and copied into the answer); `rmpv` reads the message into
//! rmpv's borrowed value and writes the result back from it; `rmp-serde`
//! deserializes it into a typed tuple, as serde users would, and serializes
//! the answer. The evidence the engine's choice rests on
//! (README, "The SignalR hub").

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringecho::hub::msgpack;

/// `[1, {}, "12345", "Echo", [payload], []]`, without its length prefix.
fn invocation(size: usize) -> Vec<u8> {
    let payload: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let mut body = vec![0x96, 0x01, 0x80];
    rmp::encode::write_str(&mut body, "12345").unwrap();
    rmp::encode::write_str(&mut body, "Echo").unwrap();
    rmp::encode::write_array_len(&mut body, 1).unwrap();
    rmp::encode::write_str(&mut body, &payload).unwrap();
    rmp::encode::write_array_len(&mut body, 0).unwrap();
    body
}

fn engine_answer(body: &[u8], out: &mut Vec<u8>) {
    let message = msgpack::parse(body).unwrap();
    assert_eq!((message.kind, message.target), (1, Some("Echo")));
    out.clear();
    msgpack::Writer(out).completion(
        message.invocation_id.unwrap(),
        Ok(Some(message.arguments[0])),
    );
}

fn rmpv_answer(body: &[u8], out: &mut Vec<u8>) {
    use rmpv::ValueRef;
    let value = rmpv::decode::read_value_ref(&mut &body[..]).unwrap();
    let ValueRef::Array(fields) = value else {
        panic!("not an array")
    };
    assert!(matches!(&fields[3], ValueRef::String(s) if s.as_str() == Some("Echo")));
    let ValueRef::String(id) = fields[2] else {
        panic!("no invocation id")
    };
    let id = id.as_str().unwrap();
    let ValueRef::Array(arguments) = &fields[4] else {
        panic!("no arguments")
    };
    let answer = ValueRef::Array(vec![
        ValueRef::from(3),
        ValueRef::Map(Vec::new()),
        ValueRef::from(id),
        ValueRef::from(3),
        arguments[0].clone(),
    ]);
    out.clear();
    rmpv::encode::write_value_ref(out, &answer).unwrap();
}

type Invocation<'a> = (
    u8,
    std::collections::HashMap<&'a str, &'a str>,
    Option<&'a str>,
    &'a str,
    Vec<rmpv::Value>,
    Vec<&'a str>,
);

fn serde_answer(body: &[u8], out: &mut Vec<u8>) {
    let (_, _, id, target, arguments, _): Invocation = rmp_serde::from_slice(body).unwrap();
    assert_eq!(target, "Echo");
    let answer = (
        3u8,
        std::collections::HashMap::<&str, &str>::new(),
        id.unwrap(),
        3u8,
        &arguments[0],
    );
    out.clear();
    rmp_serde::encode::write(out, &answer).unwrap();
}

fn hub_msgpack(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub MessagePack Echo: read + answer");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for size in [20usize, 1024, 16 * 1024] {
        let body = invocation(size);
        // Every way gives the same answer (the engine's has its prefix).
        let (mut a, mut b, mut c2) = (Vec::new(), Vec::new(), Vec::new());
        engine_answer(&body, &mut a);
        rmpv_answer(&body, &mut b);
        serde_answer(&body, &mut c2);
        assert_eq!(a[a.len() - b.len()..], b[..], "{size}");
        assert_eq!(b, c2, "{size}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        type Answer = fn(&[u8], &mut Vec<u8>);
        for (name, answer) in [
            (
                "engine (rmp markers, raw argument)",
                engine_answer as Answer,
            ),
            ("rmpv (borrowed value)", rmpv_answer),
            ("rmp-serde (typed, rmpv argument)", serde_answer),
        ] {
            group.bench_with_input(BenchmarkId::new(name, size), &body, |bench, body| {
                let mut out = Vec::new();
                bench.iter(|| {
                    answer(body, &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hub_msgpack);
criterion_main!(benches);

//! The framing codecs: `Decoder::decode` cutting messages off a buffer, for the framings echo
//! and chat use, with short and long messages, and one message dribbled in a byte at a time
//! (which must stay linear: the decoder remembers how far it already scanned).
//! Run: `cargo bench --bench framing`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use tincan::protocol::framing::{Decoder, Framing};

/// `count` messages of `size` bytes each, encoded back to back.
fn stream(framing: Framing, size: usize, count: usize) -> Vec<u8> {
    let msg = vec![b'x'; size];
    let mut out = Vec::new();
    for _ in 0..count {
        framing.encode(&msg, &mut out);
    }
    out
}

fn decode_all(d: &mut Decoder, mut buf: &[u8]) -> usize {
    let mut n = 0;
    while let Ok(Some(f)) = d.decode(buf) {
        buf = &buf[f.consumed..];
        n += 1;
    }
    n
}

fn back_to_back(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_100_messages");
    for framing in [Framing::Line, Framing::Null, Framing::Length] {
        for size in [16usize, 1024] {
            let input = stream(framing, size, 100);
            g.throughput(Throughput::Bytes(input.len() as u64));
            g.bench_function(format!("{framing}/{size}B"), |b| {
                b.iter(|| {
                    let mut d = Decoder::new(framing, 1 << 20);
                    let n = decode_all(&mut d, black_box(&input));
                    assert_eq!(n, 100);
                })
            });
        }
    }
    g.finish();
}

fn byte_at_a_time(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_dribbled");
    let input = stream(Framing::Line, 4096, 1);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("line/4096B", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Framing::Line, 1 << 20);
            let mut found = None;
            for end in 1..=input.len() {
                if let Ok(Some(f)) = d.decode(black_box(&input[..end])) {
                    found = Some(f);
                }
            }
            assert!(found.is_some());
        })
    });
    g.finish();
}

criterion_group!(benches, back_to_back, byte_at_a_time);
criterion_main!(benches);

//! Speed of the packed-delta codec on a 1%-dense n = 10^7 delta (about
//! 100k entries, the default TopK ratio) and on a fully dense 2^20 delta
//! (every chunk a bitmap): encode, full validation, and decode to owned
//! (fresh, and into reused vectors).

use chronos_sync::WireDtype;
use chronos_sync::wire::{PackedDelta, PackedView};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// Every element independently with probability `p` (deterministic).
fn delta(n: u64, p: f64, dtype: WireDtype) -> PackedDelta {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let cut = (p * u64::MAX as f64) as u64;
    let indices: Vec<u64> = (0..n).filter(|_| next() <= cut).collect();
    let values = indices.iter().map(|&i| (i % 1000) as f32 * 1e-3 - 0.5).collect();
    PackedDelta::new(n, dtype, indices, values).expect("valid delta")
}

fn codec(c: &mut Criterion) {
    for (name, n, p, dtype) in [
        ("sparse1pct_1e7_bf16", 10_000_000u64, 0.01, WireDtype::Bf16),
        ("dense_2p20_f32", 1 << 20, 1.0, WireDtype::F32),
    ] {
        let d = delta(n, p, dtype);
        let bytes = d.encode().unwrap();
        let mut g = c.benchmark_group(format!("wire/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut out = Vec::new();
        g.bench_function("encode_into", |b| b.iter(|| d.encode_into(black_box(&mut out)).unwrap()));
        g.bench_function("parse", |b| b.iter(|| PackedView::parse(black_box(&bytes)).map(|v| v.count())));
        g.bench_function("decode", |b| b.iter(|| PackedDelta::decode(black_box(&bytes))));
        let mut owned = PackedDelta::empty(0, dtype);
        g.bench_function("decode_into", |b| b.iter(|| owned.decode_into(black_box(&bytes))));
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);

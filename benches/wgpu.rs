//! Throughput of the WGSL backend's fused pass and select + pack, sizes 2^16
//! to 2^24, in GB/s of compulsory traffic (criterion `Throughput::Bytes`):
//!
//! - fused pass: read delta, acc and theta, write acc' (16 bytes per element);
//! - select + pack (TopK 1%, bf16): read the accumulator once per histogram
//!   level and for the counts and the write (the selection touches it five
//!   times at most; we count the two reads any compaction needs, 8 bytes per
//!   element) plus the packed bytes written.
//!
//! `CHRONOS_BENCH_MAX_LOG2` caps the largest size (default 24).

use std::time::Duration;

use chronos_sync::{Backend, Selection, SyncConfig, WgpuBackend, WireDtype};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let backend = match WgpuBackend::new() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("wgpu bench skipped: {e}");
            return;
        }
    };
    eprintln!("adapter: {}", backend.name());
    let max_log2: u32 = std::env::var("CHRONOS_BENCH_MAX_LOG2").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let cfg = SyncConfig::builder()
        .selection(Selection::TopK { ratio: 0.01 })
        .wire_dtype(WireDtype::Bf16)
        .build()
        .expect("valid config");

    let mut group = c.benchmark_group("wgpu");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for log2 in (16..=max_log2).step_by(2) {
        let n = 1usize << log2;
        let mut delta = backend.alloc(n).expect("alloc");
        let mut theta = backend.alloc(n).expect("alloc");
        backend.upload(&data(n, 1), &mut delta).expect("upload");
        backend.upload(&data(n, 2), &mut theta).expect("upload");
        let mut state = backend.create_state(n, &cfg).expect("state");

        group.throughput(Throughput::Bytes(16 * n as u64));
        group.bench_with_input(BenchmarkId::new("fused", n), &n, |b, _| {
            b.iter(|| backend.accumulate(&mut state, &delta, &theta, 0.01).expect("accumulate"))
        });

        backend.accumulate(&mut state, &delta, &theta, 0.01).expect("accumulate");
        backend.commit_accumulate(&mut state).expect("commit");
        let packed_len = backend.select_pack(&mut state).expect("select_pack").len() as u64;
        group.throughput(Throughput::Bytes(8 * n as u64 + packed_len));
        group.bench_with_input(BenchmarkId::new("select_pack", n), &n, |b, _| {
            b.iter(|| backend.select_pack(&mut state).expect("select_pack").len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

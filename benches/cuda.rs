//! Criterion benches for the three CUDA kernels on a GPU (feature `cuda`).
//! Each reports the GB/s of its compulsory traffic — the bytes the operation
//! cannot avoid moving — and the ratio to the device's measured
//! device-to-device copy bandwidth (read + write). Without a GPU it says so
//! and exits cleanly.
//!
//! Compulsory bytes per element (n elements, k selected, W ranks):
//! - fused pass: read acc, delta, theta, write acc' = 16 B;
//! - select + pack: read acc once = 4 B, plus the packed output;
//! - apply: the gathered bytes, plus per entry read+write of theta (8 B) and,
//!   for own entries, read+write of acc (8 B).
//!
//! `cargo bench --features cuda --bench cuda`

use chronos_sync::backend::cuda::{CudaBackend, gpu_present};
use chronos_sync::{Backend, Gathered, Selection, SyncConfig, WireDtype};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::Instant;

const N: usize = 1 << 26;

fn copy_bandwidth(b: &CudaBackend) -> f64 {
    let stream = b.runner().stream().clone();
    let bytes = N * 4;
    let src = stream.alloc_zeros::<u8>(bytes).expect("alloc");
    let mut dst = stream.alloc_zeros::<u8>(bytes).expect("alloc");
    stream.memcpy_dtod(&src, &mut dst).expect("warm-up copy");
    stream.synchronize().expect("sync");
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        stream.memcpy_dtod(&src, &mut dst).expect("copy");
    }
    stream.synchronize().expect("sync");
    (2 * bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn report(name: &str, bytes: f64, secs: f64, copy: f64) {
    let gbs = bytes / secs / 1e9;
    println!("{name}: {:.1} GB/s compulsory, {:.0}% of the {copy:.1} GB/s device copy", gbs, 100.0 * gbs / copy);
}

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn kernels(c: &mut Criterion) {
    if !gpu_present() {
        println!("no CUDA GPU visible: CUDA benches skipped");
        return;
    }
    let b = match CudaBackend::new(0) {
        Ok(b) => b,
        Err(e) => {
            println!("CUDA backend unavailable ({e}): CUDA benches skipped");
            return;
        }
    };
    println!("{}", b.name());
    let copy = copy_bandwidth(&b);
    let config =
        SyncConfig { selection: Selection::TopK { ratio: 0.01 }, wire_dtype: WireDtype::Bf16, ..SyncConfig::default() };
    let mut st = b.create_state(N, &config).expect("state");
    let host: Vec<f32> = (0..N).map(|i| ((i as f32) * 0.618).sin()).collect();
    let mut delta = b.alloc(N).expect("alloc");
    b.upload(&host, &mut delta).expect("upload");
    let mut theta = b.alloc(N).expect("alloc");
    b.upload(&host, &mut theta).expect("upload");

    let mut g = c.benchmark_group("cuda");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(16 * N as u64));
    g.bench_function("fused_pass", |bench| bench.iter(|| b.accumulate(&mut st, &delta, &theta, 0.01).expect("fused")));
    report(
        "fused_pass",
        16.0 * N as f64,
        time(|| {
            let _ = b.accumulate(&mut st, &delta, &theta, 0.01);
        }),
        copy,
    );
    b.commit_accumulate(&mut st).expect("commit");

    let packed_len = b.select_pack(&mut st).expect("pack").len();
    let pack_bytes = 4 * N + packed_len;
    g.throughput(Throughput::Bytes(pack_bytes as u64));
    g.bench_function("select_pack_topk_1pct", |bench| bench.iter(|| b.select_pack(&mut st).expect("pack").len()));
    report(
        "select_pack",
        pack_bytes as f64,
        time(|| {
            let _ = b.select_pack(&mut st);
        }),
        copy,
    );

    let packed = b.select_pack(&mut st).expect("pack").to_vec();
    let mut gathered = Gathered::new();
    gathered.reset(&[packed.len() as u64]).expect("lengths of real buffers");
    gathered.push_rank(&packed);
    let k = config.selection.k(N).expect("top-k");
    let apply_bytes = packed.len() + 16 * k;
    g.throughput(Throughput::Bytes(apply_bytes as u64));
    g.bench_function("apply_1_rank", |bench| {
        bench.iter(|| b.apply(&mut st, &mut theta, &gathered, 0, 1.0).expect("apply"))
    });
    report(
        "apply",
        apply_bytes as f64,
        time(|| {
            let _ = b.apply(&mut st, &mut theta, &gathered, 0, 1.0);
        }),
        copy,
    );
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);

//! The wire encoder (`PackedDelta::encode_into`) and decoder
//! (`wire::validate`, and `wire::decode` into an owned `PackedDelta`) at
//! several densities, bf16 values.
//!
//! Traffic models: encode reads the entries (8 B index + 4 B value) and
//! writes the packed bytes; validate reads the packed bytes; decode reads
//! the packed bytes and writes the entries (12 B each).
//!
//! `cargo bench --bench codec [-- --quick]` (`benches/wire.rs` is the wire
//! helper's fixed-size codec bench; this one sweeps sizes and densities with the roofline).

#[path = "support/mod.rs"]
mod support;

use chronos_sync::WireDtype;
use chronos_sync::wire::{self, PackedDelta};
use criterion::Criterion;
use std::hint::black_box;
use support::config::{self, size_label};
use support::data::SplitMix;
use support::roofline::{self, Group};

const DENSITIES: [f64; 4] = [0.001, 0.01, 0.1, 1.0];

/// Each index kept with probability `density`, values ~N(0, 1).
fn random_delta(n: usize, density: f64, seed: u64) -> PackedDelta {
    let mut rng = SplitMix::new(seed);
    let cut = (density * (1u64 << 53) as f64) as u64;
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for i in 0..n as u64 {
        if density >= 1.0 || rng.next_u64() >> 11 < cut {
            indices.push(i);
            values.push(rng.normal());
        }
    }
    PackedDelta::new(n as u64, WireDtype::Bf16, indices, values).expect("valid delta")
}

fn bench_wire(c: &mut Criterion) {
    let mut g = Group::new(c, "wire");
    for n in config::sizes() {
        for d in DENSITIES {
            let delta = random_delta(n, d, 5);
            let count = delta.indices.len() as u64;
            let bytes = delta.encode().unwrap();
            let packed = bytes.len() as u64;
            let tag = format!("{}%/{}", d * 100.0, size_label(n));
            let mut out = Vec::with_capacity(bytes.len());
            g.bench(&format!("encode/{tag}"), 12 * count + packed, || {
                delta.encode_into(&mut out).unwrap();
                black_box(out.len());
            });
            g.bench(&format!("validate/{tag}"), packed, || {
                wire::validate(black_box(&bytes), n as u64, WireDtype::Bf16).expect("valid");
            });
            g.bench(&format!("decode/{tag}"), packed + 12 * count, || {
                black_box(wire::decode(black_box(&bytes)).expect("valid"));
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = config::criterion();
    roofline::bench_stream(&mut c);
    bench_wire(&mut c);
    c.final_summary();
    roofline::print_summary("wire encoder / decoder");
}

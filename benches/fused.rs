//! The fused accumulate + norms pass (`Backend::accumulate`) against the
//! unfused passes (a re-implementation of the seed's pass structure, not the
//! seed's code), beside the machine's triad bandwidth.
//!
//! Traffic model (compulsory bytes per element, both rows): read `delta`,
//! `acc`, `theta` and write `acc'` = 16 B. The unfused passes really move
//! 32 B/elem (see `support/unfused.rs`), so they cannot beat half the
//! fused pass's GB/s on a bandwidth-bound machine.
//!
//! `cargo bench --bench fused [-- --quick]`; sizes via `CHRONOS_BENCH_*`
//! (see `support/config.rs`).

#[path = "support/mod.rs"]
mod support;

use chronos_sync::{Backend, CpuBackend, Selection};
use criterion::Criterion;
use std::hint::black_box;
use support::config::{self, size_label};
use support::data::normal_vec;
use support::fixture::{self, Trigger};
use support::roofline::{self, Group};
use support::unfused::Unfused;

/// Compulsory bytes per element of the fused pass.
pub const FUSED_BYTES_PER_ELEM: u64 = 16;

fn bench_fused(c: &mut Criterion) {
    let backend = CpuBackend::new();
    let cfg = fixture::config(Selection::default(), Trigger::Never);
    let mut g = Group::new(c, "accumulate");
    for n in config::sizes() {
        let bytes = FUSED_BYTES_PER_ELEM * n as u64;
        let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 2, 7);
        let delta = normal_vec(n, fixture::DELTA_SCALE, 11);
        let theta = normal_vec(n, 1.0, 0x7e7a);
        g.bench(&format!("fused/{}", size_label(n)), bytes, || {
            black_box(backend.accumulate(&mut state, &delta, &theta, 0.01).expect("accumulate"));
        });
        drop(state);
        let mut unfused = Unfused::new(n);
        g.bench(&format!("unfused/{}", size_label(n)), bytes, || {
            black_box(unfused.accumulate(&delta, &theta));
        });
    }
    g.finish();
}

fn main() {
    let mut c = config::criterion();
    roofline::bench_stream(&mut c);
    bench_fused(&mut c);
    c.final_summary();
    roofline::print_summary("accumulate: fused vs unfused (16 B/elem model)");
}

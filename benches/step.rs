//! One whole `SparseSync::step` with 1, 2 and 4 in-process ranks (threads +
//! `LocalCollective`, all on the CPU backend and rayon's global pool), for a
//! step that only accumulates and one that syncs every time (default
//! selection, `TopK` 1%, bf16), and the dense all-reduce baseline step.
//!
//! Traffic models (per rank, compulsory bytes):
//! - non-triggering step: the fused pass, 16 B/elem (the vote is 4(1+W) B);
//!   its ratio to the fused pass alone is the cost of the step's control.
//! - syncing step: the fused pass plus one read of the accumulator for the
//!   selection, 20 B/elem (a lower bound: packing, the exchange and the
//!   apply add a little at 1% density).
//! - dense step: see `support/dense.rs`, `4n + 8Wn + 8n`.
//!
//! Only sizes with W * n <= 2^26 run (each rank holds about 6 vectors).
//! `cargo bench --bench step [-- --quick]`.

#[path = "support/mod.rs"]
mod support;

use chronos_sync::{CpuBackend, LocalCollective, Selection, SparseSync};
use criterion::Criterion;
use std::hint::black_box;
use support::config::{self, size_label};
use support::data::normal_vec;
use support::dense::DenseAllReduce;
use support::fixture::{self, Trigger};
use support::ranks::{RankFn, Ranks};
use support::roofline::{self, Group};

const WORLDS: [usize; 3] = [1, 2, 4];
/// Largest `W * n` benched.
const MAX_TOTAL_ELEMS: usize = 1 << 26;

/// One rank's step closure over its own engine, update and parameters.
fn sparse_rank(mut engine: SparseSync<CpuBackend, LocalCollective>, n: usize, rank: usize) -> RankFn {
    let delta = normal_vec(n, fixture::DELTA_SCALE, 100 + rank as u64);
    let mut theta = normal_vec(n, 1.0, 0x7e7a);
    Box::new(move || {
        black_box(engine.step(&delta, &mut theta).expect("step"));
    })
}

fn dense_rank(collective: LocalCollective, n: usize, rank: usize) -> RankFn {
    let delta = normal_vec(n, fixture::DELTA_SCALE, 100 + rank as u64);
    let mut theta = normal_vec(n, 1.0, 0x7e7a);
    let mut dense = DenseAllReduce::new(collective, n);
    Box::new(move || {
        black_box(dense.step(&delta, &mut theta).expect("dense step"));
    })
}

fn bench_step(c: &mut Criterion) {
    let mut g = Group::new(c, "step");
    g.inner().sampling_mode(criterion::SamplingMode::Flat);
    for n in config::sizes() {
        for world in WORLDS.into_iter().filter(|w| w * n <= MAX_TOTAL_ELEMS) {
            let label = size_label(n);
            for (name, trigger, per_elem) in [("no-sync", Trigger::Never, 16), ("sync-TopK1%", Trigger::Always, 20)] {
                let cfg = fixture::config(Selection::TopK { ratio: 0.01 }, trigger);
                let fns = fixture::engines(world, n, &cfg)
                    .into_iter()
                    .enumerate()
                    .map(|(r, e)| sparse_rank(e, n, r))
                    .collect();
                let mut ranks = Ranks::new(fns);
                ranks.run(1);
                g.bench_custom(&format!("{name}/W{world}/{label}"), per_elem * n as u64, |iters| ranks.run(iters));
            }
            let fns = LocalCollective::group(world, fixture::TIMEOUT)
                .expect("group")
                .into_iter()
                .enumerate()
                .map(|(r, c)| dense_rank(c, n, r))
                .collect();
            let mut ranks = Ranks::new(fns);
            ranks.run(1);
            let bytes = DenseAllReduce::<LocalCollective>::traffic_bytes(n, world);
            g.bench_custom(&format!("dense-allreduce/W{world}/{label}"), bytes, |iters| ranks.run(iters));
        }
    }
    g.finish();
}

fn main() {
    let mut c = config::criterion();
    roofline::bench_stream(&mut c);
    bench_step(&mut c);
    c.final_summary();
    roofline::print_summary("whole step per rank (see the traffic models in benches/step.rs)");
}

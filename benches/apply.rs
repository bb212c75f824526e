//! Unpack + apply (`Backend::apply`) of 1, 2 and 4 ranks' packed buffers.
//!
//! Traffic model: read every gathered byte, read and write `theta` at
//! every index present in any buffer (8 B each), read and write the own
//! accumulator at every own entry (error feedback, 8 B each). Sparse
//! indices touch whole cache lines, so at low density the real traffic is
//! higher than this model and the ratio to triad is expected to be low;
//! `Dense` is the bandwidth-bound case.
//!
//! `cargo bench --bench apply [-- --quick]`.

#[path = "support/mod.rs"]
mod support;

use chronos_sync::wire::PackedView;
use chronos_sync::{Backend, CpuBackend, Gathered, Selection};
use criterion::Criterion;
use support::config::{self, size_label};
use support::data::normal_vec;
use support::fixture::{self, Trigger};
use support::roofline::{self, Group};

const WORLDS: [usize; 3] = [1, 2, 4];

/// Compulsory bytes of applying `gathered` (see the module docs).
fn apply_traffic(n: usize, gathered: &Gathered) -> u64 {
    let mut present = vec![false; n];
    let mut own = 0u64;
    for (r, bytes) in gathered.iter() {
        let view = PackedView::parse(bytes).expect("bench buffers are valid");
        for (i, _) in view.iter() {
            present[i as usize] = true;
        }
        if r == 0 {
            own = view.count();
        }
    }
    let union = present.iter().filter(|p| **p).count() as u64;
    gathered.total_len() as u64 + 8 * union + 8 * own
}

fn bench_apply(c: &mut Criterion) {
    let backend = CpuBackend::new();
    let mut g = Group::new(c, "apply");
    for n in config::sizes() {
        for (rule, sel) in [("TopK/1%", Selection::TopK { ratio: 0.01 }), ("Dense", Selection::Dense)] {
            for world in WORLDS {
                let cfg = fixture::config(sel, Trigger::Never);
                let (mut state, gathered) = fixture::gathered_from_ranks(&backend, n, &cfg, world);
                let mut theta = normal_vec(n, 1.0, 0x7e7a);
                let bytes = apply_traffic(n, &gathered);
                let weight = 1.0 / world as f32;
                g.bench(&format!("{rule}/W{world}/{}", size_label(n)), bytes, || {
                    backend.apply(&mut state, &mut theta, &gathered, 0, weight).expect("apply");
                });
            }
        }
    }
    g.finish();
}

fn main() {
    let mut c = config::criterion();
    roofline::bench_stream(&mut c);
    bench_apply(&mut c);
    c.final_summary();
    roofline::print_summary("unpack + apply (gathered bytes + 8 B/union entry + 8 B/own entry)");
}

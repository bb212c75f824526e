//! Select + pack (`Backend::select_pack`) per selection rule and density,
//! and a full-sort baseline for `TopK` (a re-implementation of the seed's
//! approach, not the seed's code: full sort, `(i64, f32)` pairs, dense
//! residual update).
//!
//! Traffic model: one read of the accumulator (4 B/elem) plus the packed
//! bytes written. The level-1 histogram comes from the fused pass, so a
//! `TopKApprox` cut that the histogram settles needs no other pass; exact
//! `TopK` usually needs one or two more histogram passes (still charged
//! only the compulsory 4 B/elem). The unfused row is charged the same model
//! with its own (12 B/entry) output.
//!
//! The baseline sorts all n indices, so it runs only up to
//! 2^`CHRONOS_BENCH_SORT_MAX_LOG2` elements (default 22).
//!
//! `cargo bench --bench select_pack [-- --quick]`.

#[path = "support/mod.rs"]
mod support;

use chronos_sync::{Backend, CpuBackend, Selection};
use criterion::Criterion;
use std::hint::black_box;
use support::config::{self, size_label};
use support::fixture::{self, Trigger};
use support::roofline::{self, Group};
use support::unfused::Unfused;

/// Densities benched for the rules that take one.
const DENSITIES: [f64; 3] = [0.001, 0.01, 0.1];
/// `TopKApprox` slack: a cut anywhere in [k, 1.5k] is accepted.
pub const APPROX_SLACK: f64 = 0.5;

fn rules(acc: &[f32]) -> Vec<(String, Selection)> {
    let mut out = Vec::new();
    for d in DENSITIES {
        let pct = format!("{}%", d * 100.0);
        out.push((format!("TopK/{pct}"), Selection::TopK { ratio: d }));
        out.push((format!("TopKApprox/{pct}"), Selection::TopKApprox { ratio: d, slack: APPROX_SLACK }));
        out.push((
            format!("Threshold/{pct}"),
            Selection::Threshold { rel: fixture::threshold_rel_for_density(acc, d) },
        ));
    }
    out.push(("Dense".into(), Selection::Dense));
    out
}

fn sort_max() -> usize {
    let l = std::env::var("CHRONOS_BENCH_SORT_MAX_LOG2").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(22);
    1usize << l.min(30)
}

fn bench_select_pack(c: &mut Criterion) {
    let backend = CpuBackend::new();
    let mut g = Group::new(c, "select_pack");
    for n in config::sizes() {
        let probe_cfg = fixture::config(Selection::Dense, Trigger::Never);
        let (probe, _) = fixture::filled_state(&backend, n, &probe_cfg, 1, 3);
        let mut acc = vec![0.0f32; n];
        backend.read_accumulator(&probe, &mut acc).expect("read_accumulator");
        drop(probe);
        for (name, sel) in rules(&acc) {
            let cfg = fixture::config(sel, Trigger::Never);
            let (mut state, _) = fixture::filled_state(&backend, n, &cfg, 1, 3);
            let packed = backend.select_pack(&mut state).expect("select_pack").len() as u64;
            let bytes = 4 * n as u64 + packed;
            g.bench(&format!("{name}/{}", size_label(n)), bytes, || {
                black_box(backend.select_pack(&mut state).expect("select_pack").len());
            });
        }
        if n <= sort_max() {
            let mut unfused = Unfused::new(n);
            unfused.acc.copy_from_slice(&acc);
            let mut out = Vec::new();
            let packed = unfused.topk_sort_pack(0.01, &mut out) as u64;
            g.bench(&format!("unfused-sort-TopK/1%/{}", size_label(n)), 4 * n as u64 + packed, || {
                black_box(unfused.topk_sort_pack(0.01, &mut out));
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = config::criterion();
    roofline::bench_stream(&mut c);
    bench_select_pack(&mut c);
    c.final_summary();
    roofline::print_summary("select + pack (4 B/elem + packed bytes model)");
}

//! Operation 1, fused: one pass reading `delta`, `acc` and `theta` and writing
//! `acc' = acc + delta`, with every reduction the step needs computed on the
//! way (sums of squares, non-finite count, level-1 histogram of `acc'`).
//!
//! Determinism: the index range is cut into fixed blocks of [`BLOCK`]
//! elements starting at 0; inside a block, element `i` goes to f64 lane
//! `i % LANES`, lanes are added in lane order, blocks in block order. None of
//! that depends on how blocks are spread over threads. Histograms are integer
//! counts, so their per-task tables may be combined in any order.

use rayon::prelude::*;

use super::state::{CpuState, HIST_BINS};
use crate::backend::StepStatus;

/// Elements per reduction block (a constant: results depend on it).
pub(super) const BLOCK: usize = 16 * 1024;
/// Independent accumulators per block: wide enough for the compiler to
/// vectorize the arithmetic and to hide the latency of the f64 adds.
const LANES: usize = 4;
/// Exponent field of an f32: all ones for infinities and NaNs.
const EXP_MASK: u32 = 0x7f80_0000;
/// Clears the sign bit: the selection key of docs/selection.md.
pub(super) const KEY_MASK: u32 = 0x7fff_ffff;
/// Level-1 digit: `key >> 20`.
pub(super) const LEVEL1_SHIFT: u32 = 20;

/// The selection key of `x`: the bit pattern of `|x|`.
#[inline(always)]
pub(super) fn key(x: f32) -> u32 {
    x.to_bits() & KEY_MASK
}

#[inline(always)]
fn nonfinite(x: f32) -> u32 {
    u32::from(x.to_bits() & EXP_MASK == EXP_MASK)
}

/// Histogram tables per task in the fused pass: lane `j` of each group of
/// `LANES` elements counts into table `j % SUB_TABLES`, so runs of equal
/// digits do not serialize on one counter's load-add-store.
pub(super) const SUB_TABLES: usize = 4;
/// Counters of one task's tables in the fused pass.
const TASK_TABLE: usize = SUB_TABLES * HIST_BINS;

/// A task's `SUB_TABLES` tables as one fixed-size array (no bounds checks).
#[inline]
fn sub_tables(hist: &mut [u32]) -> &mut [u32; TASK_TABLE] {
    hist.try_into().expect("task tables are SUB_TABLES * HIST_BINS counters long")
}

/// Views a task's slice of the histogram tables as one fixed-size table, so
/// that indexing it with a digit (always < `HIST_BINS`) needs no bounds check.
#[inline]
pub(super) fn table(hist: &mut [u32]) -> &mut [u32; HIST_BINS] {
    hist.try_into().expect("histogram tables are HIST_BINS counters long")
}

/// Runs the fused pass: writes `acc + delta` into `state.spare` and its
/// statistics into `state.spare_stats`, and returns the step status for `tau`.
/// The caller checked both lengths against `state.n`.
pub(super) fn accumulate(state: &mut CpuState, delta: &[f32], theta: &[f32], tau: f32) -> StepStatus {
    let bpt = state.blocks_per_task;
    let task_elems = bpt * BLOCK;
    let acc = &state.acc;
    state
        .spare
        .par_chunks_mut(task_elems)
        .zip(state.block_sums.par_chunks_mut(bpt))
        .zip(state.block_bad.par_chunks_mut(bpt))
        .zip(state.task_hists.par_chunks_mut(TASK_TABLE))
        .enumerate()
        .for_each(|(task, (((out, sums), bad), hist))| {
            let start = task * task_elems;
            let end = start + out.len();
            let hist = sub_tables(hist);
            hist.fill(0);
            let blocks = out
                .chunks_mut(BLOCK)
                .zip(delta[start..end].chunks(BLOCK))
                .zip(acc[start..end].chunks(BLOCK))
                .zip(theta[start..end].chunks(BLOCK));
            for ((((out, d), a), t), (sum, bad)) in blocks.zip(sums.iter_mut().zip(bad.iter_mut())) {
                (*sum, *bad) = fused_block(d, a, t, out, hist);
            }
        });
    let mut acc_sq = 0.0f64;
    let mut theta_sq = 0.0f64;
    let mut bad = 0u32;
    for (s, b) in state.block_sums.iter().zip(&state.block_bad) {
        acc_sq += s[0];
        theta_sq += s[1];
        bad = bad.saturating_add(*b);
    }
    let tasks = state.n.div_ceil(task_elems);
    sum_tables(&state.task_hists, tasks * SUB_TABLES, &mut state.spare_stats.hist1);
    state.spare_stats.acc_sq = acc_sq as f32;
    state.spare_stats.valid = true;
    state.pending = true;
    StepStatus::from_sums(acc_sq as f32, theta_sq as f32, bad, tau)
}

/// Recomputes `state.stats` from the committed accumulator (needed after
/// `apply` changed it). Same blocks and lanes as the fused pass, so the same
/// accumulator gives the same `acc_sq` bits either way.
pub(super) fn acc_stats(state: &mut CpuState) {
    let bpt = state.blocks_per_task;
    let task_elems = bpt * BLOCK;
    state
        .acc
        .par_chunks(task_elems)
        .zip(state.block_sums.par_chunks_mut(bpt))
        .zip(state.task_hists.par_chunks_mut(TASK_TABLE))
        .for_each(|((acc, sums), hist)| {
            let hist = sub_tables(hist);
            hist.fill(0);
            for (a, sum) in acc.chunks(BLOCK).zip(sums.iter_mut()) {
                sum[0] = stats_block(a, hist);
            }
        });
    let acc_sq = state.block_sums.iter().fold(0.0f64, |sum, s| sum + s[0]);
    let tasks = state.n.div_ceil(task_elems);
    sum_tables(&state.task_hists, tasks * SUB_TABLES, &mut state.stats.hist1);
    state.stats.acc_sq = acc_sq as f32;
    state.stats.valid = true;
}

/// `out[b] = sum over the first `tasks` tables of table[b]`.
pub(super) fn sum_tables(tables: &[u32], tasks: usize, out: &mut [u32]) {
    out.fill(0);
    for t in tables.chunks_exact(out.len()).take(tasks) {
        for (o, &c) in out.iter_mut().zip(t) {
            *o += c;
        }
    }
}

/// One block of the fused pass. Returns `[sum(out^2), sum(t^2)]` and the
/// non-finite count of `d` and `t`; adds the level-1 digits of `out` to `hist`.
#[inline]
fn fused_block(d: &[f32], a: &[f32], t: &[f32], out: &mut [f32], hist: &mut [u32; TASK_TABLE]) -> ([f64; 2], u32) {
    let mut sa = [0.0f64; LANES];
    let mut st = [0.0f64; LANES];
    let mut bad = [0u32; LANES];
    let body = out.len() - out.len() % LANES;
    let (out_body, out_tail) = out.split_at_mut(body);
    let lanes = out_body
        .chunks_exact_mut(LANES)
        .zip(d.chunks_exact(LANES))
        .zip(a.chunks_exact(LANES))
        .zip(t.chunks_exact(LANES));
    for (((o, d), a), t) in lanes {
        // Fixed-size views: no bounds checks, straight vector code.
        let (Ok(o), Ok(d), Ok(a), Ok(t)) = (
            <&mut [f32; LANES]>::try_from(o),
            <&[f32; LANES]>::try_from(d),
            <&[f32; LANES]>::try_from(a),
            <&[f32; LANES]>::try_from(t),
        ) else {
            continue;
        };
        let v: [f32; LANES] = std::array::from_fn(|j| a[j] + d[j]);
        *o = v;
        for j in 0..LANES {
            let v64 = f64::from(v[j]);
            let t64 = f64::from(t[j]);
            sa[j] += v64 * v64;
            st[j] += t64 * t64;
            bad[j] += nonfinite(d[j]) + nonfinite(t[j]);
        }
        for (j, x) in v.into_iter().enumerate() {
            hist[(j % SUB_TABLES) * HIST_BINS + (key(x) >> LEVEL1_SHIFT) as usize] += 1;
        }
    }
    for (j, o) in out_tail.iter_mut().enumerate() {
        let i = body + j;
        let v = a[i] + d[i];
        *o = v;
        sa[j] += f64::from(v) * f64::from(v);
        st[j] += f64::from(t[i]) * f64::from(t[i]);
        bad[j] += nonfinite(d[i]) + nonfinite(t[i]);
        hist[(key(v) >> LEVEL1_SHIFT) as usize] += 1;
    }
    ([lane_sum(&sa), lane_sum(&st)], bad.iter().sum())
}

/// One block of the statistics-only pass: `sum(a^2)` with the lanes of
/// [`fused_block`], and the level-1 digits of `a` added to `hist`.
#[inline]
fn stats_block(a: &[f32], hist: &mut [u32; TASK_TABLE]) -> f64 {
    let mut sa = [0.0f64; LANES];
    let body = a.len() - a.len() % LANES;
    for a in a[..body].chunks_exact(LANES) {
        for j in 0..LANES {
            sa[j] += f64::from(a[j]) * f64::from(a[j]);
        }
        for (j, &v) in a.iter().enumerate() {
            hist[(j % SUB_TABLES) * HIST_BINS + (key(v) >> LEVEL1_SHIFT) as usize] += 1;
        }
    }
    for (j, &v) in a[body..].iter().enumerate() {
        sa[j] += f64::from(v) * f64::from(v);
        hist[(key(v) >> LEVEL1_SHIFT) as usize] += 1;
    }
    lane_sum(&sa)
}

/// Adds the lanes in lane order (part of the fixed summation order).
#[inline(always)]
fn lane_sum(lanes: &[f64; LANES]) -> f64 {
    lanes.iter().fold(0.0, |s, &x| s + x)
}

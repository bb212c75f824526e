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
use super::tables::{SET_LEN, SUB_TABLES};
use crate::backend::StepStatus;

/// Elements per reduction block (a constant: results depend on it).
pub(super) const BLOCK: usize = 16 * 1024;
/// Independent accumulators per block: wide enough for the compiler to
/// vectorize the arithmetic and to hide the latency of the f64 adds.
pub(super) const LANES: usize = 4;
/// Exponent field of an f32: all ones for infinities and NaNs.
pub(super) const EXP_MASK: u32 = 0x7f80_0000;
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

/// Runs the fused pass: writes `acc + delta` into `state.spare` and its
/// statistics into `state.spare_stats`, and returns the step status for `tau`.
/// The caller checked both lengths against `state.n`.
pub(super) fn accumulate(state: &mut CpuState, delta: &[f32], theta: &[f32], tau: f32) -> StepStatus {
    let acc = &state.acc;
    let tables = &state.tables;
    let stream = state.stream_output;
    tables.zero();
    state
        .spare
        .par_chunks_mut(BLOCK)
        .zip(state.block_sums.par_iter_mut().zip(state.block_bad.par_iter_mut()))
        .enumerate()
        .for_each(|(b, (out, (sum, bad)))| {
            let start = b * BLOCK;
            let end = start + out.len();
            (*sum, *bad) = tables
                .with(|hist| fused_block(&delta[start..end], &acc[start..end], &theta[start..end], out, hist, stream));
        });
    let mut acc_sq = 0.0f64;
    let mut theta_sq = 0.0f64;
    let mut bad = 0u32;
    for (s, b) in state.block_sums.iter().zip(&state.block_bad) {
        acc_sq += s[0];
        theta_sq += s[1];
        bad = bad.saturating_add(*b);
    }
    tables.sum_into(&mut state.spare_stats.hist1);
    state.spare_stats.acc_sq = acc_sq as f32;
    state.spare_stats.valid = true;
    state.pending = true;
    StepStatus::from_sums(acc_sq as f32, theta_sq as f32, bad, tau)
}

/// Recomputes `state.stats` from the committed accumulator (needed after
/// `apply` changed it). Same blocks and lanes as the fused pass, so the same
/// accumulator gives the same `acc_sq` bits either way.
pub(super) fn acc_stats(state: &mut CpuState) {
    let tables = &state.tables;
    tables.zero();
    state.acc.par_chunks(BLOCK).zip(state.block_sums.par_iter_mut()).for_each(|(a, sum)| {
        sum[0] = tables.with(|hist| stats_block(a, hist));
    });
    let acc_sq = state.block_sums.iter().fold(0.0f64, |sum, s| sum + s[0]);
    tables.sum_into(&mut state.stats.hist1);
    state.stats.acc_sq = acc_sq as f32;
    state.stats.valid = true;
}

/// Per-lane running sums of one block: lane `j` holds the squares of the
/// block's elements `j, j + LANES, j + 2 LANES, ...` added in that order.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Lanes {
    pub(super) acc_sq: [f64; LANES],
    pub(super) theta_sq: [f64; LANES],
    /// Non-finite values seen (an integer: order does not matter).
    pub(super) bad: u32,
}

/// One block of the fused pass. Returns `[sum(out^2), sum(t^2)]` and the
/// non-finite count of `out` and `t`; adds the level-1 digits of `out` to
/// `hist`. The vector loop (when the CPU has one) does the longest prefix it
/// can, the portable loop ([`fused_span`]) the rest.
///
/// What the two loops agree on, bit for bit, for the same input: everything
/// a step can commit.
/// - `out` is non-finite at the same positions, and every finite element of
///   `out` has the same bits;
/// - the non-finite count is the same;
/// - each histogram bin below `0x7f8` (the digits of finite magnitudes),
///   summed over the sub-tables, is the same, and so is the total count;
/// - the two sums have the same bits, except that where one is NaN the
///   other is NaN too, with any payload.
///
/// So a block without non-finite values (the only kind a step commits: a
/// non-zero count fails the step and nothing is committed) gives identical
/// `out`, sums and histogram either way. What is not specified is the payload
/// of a NaN in `out` (and hence the bin it lands in, at or above `0x7f8`):
/// when both addends are NaN, x86's `vaddps` returns its first operand's
/// NaN, and the compiler is free to commute the portable loop's scalar add.
#[inline]
pub(super) fn fused_block(
    d: &[f32],
    a: &[f32],
    t: &[f32],
    out: &mut [f32],
    hist: &mut [u32; SET_LEN],
    stream: bool,
) -> ([f64; 2], u32) {
    let mut lanes = Lanes::default();
    #[cfg(target_arch = "x86_64")]
    let done = super::fused_x86::fused_prefix(d, a, t, out, hist, &mut lanes, stream);
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = stream;
        0
    };
    fused_span(&d[done..], &a[done..], &t[done..], &mut out[done..], hist, &mut lanes);
    ([lane_sum(&lanes.acc_sq), lane_sum(&lanes.theta_sq)], lanes.bad)
}

/// The portable fused loop over a span that starts at a multiple of
/// `LANES` elements from the block start, continuing `lanes`.
#[inline]
pub(super) fn fused_span(
    d: &[f32],
    a: &[f32],
    t: &[f32],
    out: &mut [f32],
    hist: &mut [u32; SET_LEN],
    lanes: &mut Lanes,
) {
    let (sa, st) = (&mut lanes.acc_sq, &mut lanes.theta_sq);
    let mut bad = 0u32;
    let body = out.len() - out.len() % LANES;
    let (out_body, out_tail) = out.split_at_mut(body);
    let groups = out_body
        .chunks_exact_mut(LANES)
        .zip(d.chunks_exact(LANES))
        .zip(a.chunks_exact(LANES))
        .zip(t.chunks_exact(LANES));
    for (((o, d), a), t) in groups {
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
            bad += nonfinite(v[j]) + nonfinite(t[j]);
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
        bad += nonfinite(v) + nonfinite(t[i]);
        hist[(key(v) >> LEVEL1_SHIFT) as usize] += 1;
    }
    lanes.bad = lanes.bad.wrapping_add(bad);
}

/// One block of the statistics-only pass: `sum(a^2)` with the lanes of
/// [`fused_block`], and the level-1 digits of `a` added to `hist`.
#[inline]
fn stats_block(a: &[f32], hist: &mut [u32; SET_LEN]) -> f64 {
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

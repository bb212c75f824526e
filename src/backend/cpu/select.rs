//! Which entries a sync sends (docs/selection.md), as a selection bitmap over
//! the committed accumulator plus per-chunk counts.
//!
//! One pass over the accumulator (`mark`) sets the bits of every entry at or
//! above a cut, captures those entries' values and, for the top-k rules,
//! sets aside the *candidates*: the entries in the level-1 bin that
//! straddles the boundary, with their raw bits and chunk-local indices, in
//! index order. Levels 2 and 3 of the cut search and the tie rule then only
//! look at the candidates, and end by keeping only the candidates they take.
//! The packer reads the bitmap and those two value lists, never the
//! accumulator: the accumulator is streamed once per sync. `Dense` skips
//! the pass (every entry is sent) and the packer reads the accumulator in
//! order instead.

use rayon::prelude::*;

use super::fused::{KEY_MASK, key};
use super::mark::{CHUNK_WORDS, Mark, mark};
use super::state::CpuState;
use crate::config::Selection;
use crate::wire::layout::CHUNK_ELEMS;

/// `kmax` of docs/selection.md for `TopKApprox`: `floor(k * (1 + slack))`.
pub(super) fn kmax(k: u64, slack: f64) -> u64 {
    ((k as f64 * (1.0 + slack)).floor() as u64).max(k)
}

/// Fills `state.sel` (bit `j` of word `w` of chunk `c`: element
/// `65536 c + 32 w + j` is sent) and `state.chunk_counts` for the state's
/// rule. For every rule but `Dense`, the values of the sent entries are then
/// in two lists per chunk, each in index order: the taken candidates
/// (`state.cand_counts[c]` of them in `state.cand_bits` / `state.cand_index`)
/// and all the others (`chunk_counts[c] - cand_counts[c]` in
/// `state.marked_bits`).
pub(super) fn select(state: &mut CpuState) {
    let n = state.n;
    match state.selection {
        Selection::Dense => select_all(state),
        Selection::Threshold { rel } => {
            // In f32, from `A` exactly as the status reported it.
            let c = (rel as f32) * (state.stats.acc_sq / n as f32).sqrt();
            mark(state, key(c), Mark::Capture);
        }
        Selection::TopK { .. } | Selection::TopKApprox { .. } => {
            let k = state.selection.k(n).unwrap_or(n) as u64;
            let kmax = match state.selection {
                Selection::TopKApprox { slack, .. } => kmax(k, slack),
                _ => k,
            };
            top_k(state, k, kmax);
        }
    }
}

/// The cut search for `1 <= k <= kmax`.
fn top_k(state: &mut CpuState, k: u64, kmax: u64) {
    // Level 1, from the fused pass's histogram.
    let (bin, ge, at_bin) = scan(&state.stats.hist1, 0, k);
    if ge <= kmax {
        mark(state, (bin as u32) << 20, Mark::Capture);
        return;
    }
    // Everything above the bin is in; the bin's entries become candidates,
    // and `state.level_hist` their level-2 histogram.
    mark(state, (bin as u32 + 1) << 20, Mark::Candidates { lo: (bin as u32) << 20 });
    let mut above = ge - at_bin;
    let mut prefix = (bin as u32) << 20;
    let (bin, ge, at_bin) = scan(&state.level_hist, above, k);
    prefix |= (bin as u32) << 9;
    if ge <= kmax {
        return take_candidates(state, prefix, u32::MAX, 0);
    }
    above = ge - at_bin;
    candidate_histogram(state, prefix >> 9);
    let (bin, ge, at_bin) = scan(&state.level_hist[..512], above, k);
    prefix |= bin as u32;
    if ge <= kmax {
        return take_candidates(state, prefix, u32::MAX, 0);
    }
    above = ge - at_bin;
    // Level 3 exhausted: `prefix` is the exact key T. Take every key above
    // it and the first `k - above` keys equal to it.
    take_candidates(state, prefix + 1, prefix, k - above);
}

/// Scans `hist` from the highest bin down for the first bin `b` at which
/// `above + sum(hist[b..]) >= k`. Returns `b`, that sum, and `hist[b]`.
fn scan(hist: &[u32], above: u64, k: u64) -> (usize, u64, u64) {
    let mut ge = above;
    for (b, &h) in hist.iter().enumerate().rev() {
        ge += u64::from(h);
        if ge >= k || b == 0 {
            return (b, ge, u64::from(h));
        }
    }
    (0, ge, 0)
}

/// Fills `state.level_hist[..512]` with the level-3 digits of the candidates
/// whose `key >> 9 == want`.
fn candidate_histogram(state: &mut CpuState, want: u32) {
    let tables = &state.tables;
    tables.zero();
    state.cand_bits.par_chunks(CHUNK_ELEMS).zip(state.cand_counts.par_iter()).for_each(|(bits, &m)| {
        tables.with(|hist| {
            for &b in &bits[..m as usize] {
                let k = b & KEY_MASK;
                if k >> 9 == want {
                    hist[(k & 0x1ff) as usize] += 1;
                }
            }
        });
    });
    tables.sum_into(&mut state.level_hist);
}

/// Adds to the selection the candidates with `key >= cut`, plus the first
/// `ties` candidates (in index order) with `key == tie`; updates the counts.
/// Each chunk's candidate lists then keep only the taken ones (moved to the
/// front, order kept), and `state.cand_counts` counts those.
fn take_candidates(state: &mut CpuState, cut: u32, tie: u32, ties: u64) {
    // The ties each chunk takes: the first ones over the whole vector.
    if ties > 0 {
        state
            .cand_bits
            .par_chunks(CHUNK_ELEMS)
            .zip(state.cand_counts.par_iter())
            .zip(state.chunk_ties.par_iter_mut())
            .for_each(|((bits, &m), eq)| {
                *eq = bits[..m as usize].iter().map(|&b| u32::from(b & KEY_MASK == tie)).sum();
            });
    }
    let mut left = ties;
    for eq in state.chunk_ties.iter_mut() {
        let take = left.min(u64::from(*eq));
        left -= take;
        *eq = take as u32;
    }
    state
        .cand_bits
        .par_chunks_mut(CHUNK_ELEMS)
        .zip(state.cand_index.par_chunks_mut(CHUNK_ELEMS))
        .zip(state.sel.par_chunks_mut(CHUNK_WORDS))
        .zip(state.cand_counts.par_iter_mut().zip(state.chunk_ties.par_iter()))
        .zip(state.chunk_counts.par_iter_mut())
        .for_each(|((((bits, index), sel), (m, &quota)), count)| {
            let mut quota = quota;
            let mut kept = 0;
            for i in 0..*m as usize {
                let (b, j) = (bits[i], index[i]);
                let k = b & KEY_MASK;
                if k >= cut || (k == tie && quota > 0) {
                    quota -= u32::from(k < cut);
                    sel[usize::from(j) / 32] |= 1 << (j % 32);
                    (bits[kept], index[kept]) = (b, j);
                    kept += 1;
                }
            }
            *count += kept as u32;
            *m = kept as u32;
        });
}

/// `Dense`: every entry, without reading the accumulator (every key is
/// `>= 0`, so this is what marking with cut 0 would produce).
fn select_all(state: &mut CpuState) {
    let n = state.n;
    let words = state.sel.chunks_mut(CHUNK_WORDS);
    for (c, ((sel, count), found)) in words.zip(&mut state.chunk_counts).zip(&mut state.cand_counts).enumerate() {
        let len = CHUNK_ELEMS.min(n - c * CHUNK_ELEMS);
        let (full, rest) = sel.split_at_mut(len / 32);
        full.fill(u32::MAX);
        if let (Some(last), tail @ 1..) = (rest.first_mut(), len % 32) {
            *last = (1u32 << tail) - 1;
        }
        (*count, *found) = (len as u32, 0);
    }
}

//! Which entries a sync sends (docs/selection.md), as a selection bitmap over
//! the committed accumulator plus per-chunk counts.
//!
//! One pass over the accumulator ([`mark`]) sets the bits of every entry at
//! or above a cut and, for the top-k rules, sets aside the *candidates*: the
//! entries in the level-1 bin that straddles the boundary, with their keys
//! and chunk-local indices, in index order. Levels 2 and 3 of the cut search
//! and the tie rule then only look at the candidates, and the packer only
//! reads the bitmap and the selected values: the accumulator is streamed
//! once per sync.

use rayon::prelude::*;

use super::fused::{key, sum_tables, table};
use super::state::{CpuState, HIST_BINS};
use crate::config::Selection;
use crate::wire::layout::CHUNK_ELEMS;

/// Bitmap words per chunk.
pub(super) const CHUNK_WORDS: usize = CHUNK_ELEMS / 32;

/// `kmax` of docs/selection.md for `TopKApprox`: `floor(k * (1 + slack))`.
pub(super) fn kmax(k: u64, slack: f64) -> u64 {
    ((k as f64 * (1.0 + slack)).floor() as u64).max(k)
}

/// Fills `state.sel` (bit `j` of word `w` of chunk `c`: element
/// `65536 c + 32 w + j` is sent) and `state.chunk_counts` for the state's rule.
pub(super) fn select(state: &mut CpuState) {
    let n = state.n;
    match state.selection {
        Selection::Dense => mark::<false>(state, 0, 0),
        Selection::Threshold { rel } => {
            // In f32, from `A` exactly as the status reported it.
            let c = (rel as f32) * (state.stats.acc_sq / n as f32).sqrt();
            mark::<false>(state, key(c), 0);
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
        mark::<false>(state, (bin as u32) << 20, 0);
        return;
    }
    // Everything above the bin is in; the bin's entries become candidates,
    // and `state.level_hist` their level-2 histogram.
    mark::<true>(state, (bin as u32 + 1) << 20, bin as u32);
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

/// The one pass over the accumulator: for each chunk, the bitmap of keys
/// `>= hi` into `state.sel` and their count into `state.chunk_counts`; with
/// `CANDIDATES`, also the keys with `key >> 20 == bin` (below `hi`) into the
/// chunk's candidate slots, their count into `state.cand_counts`, and their
/// level-2 histogram into `state.level_hist`.
fn mark<const CANDIDATES: bool>(state: &mut CpuState, hi: u32, bin: u32) {
    let chunks = state.chunk_counts.len();
    let groups = state.task_hists.len() / HIST_BINS;
    let per_group = chunks.div_ceil(groups.max(1)).max(1);
    let elems = per_group * CHUNK_ELEMS;
    let cand_elems = if CANDIDATES { elems } else { 0 };
    let cand =
        state.cand_keys.par_chunks_mut(cand_elems.max(1)).zip(state.cand_index.par_chunks_mut(cand_elems.max(1)));
    let work = state
        .acc
        .par_chunks(elems)
        .zip(state.sel.par_chunks_mut(per_group * CHUNK_WORDS))
        .zip(state.chunk_counts.par_chunks_mut(per_group).zip(state.cand_counts.par_chunks_mut(per_group)))
        .zip(state.task_hists.par_chunks_mut(HIST_BINS));
    if CANDIDATES {
        work.zip(cand).for_each(|((((acc, sel), (counts, cand_counts)), hist), (keys, index))| {
            mark_group::<true>(Group { acc, sel, counts, cand_counts, hist, keys, index }, hi, bin);
        });
    } else {
        work.for_each(|(((acc, sel), (counts, cand_counts)), hist)| {
            let (keys, index) = (&mut [][..], &mut [][..]);
            mark_group::<false>(Group { acc, sel, counts, cand_counts, hist, keys, index }, hi, bin);
        });
    }
    let used = state.n.div_ceil(elems);
    sum_tables(&state.task_hists, used, &mut state.level_hist);
}

/// One task's share of [`mark`]: consecutive chunks and their outputs.
struct Group<'a> {
    acc: &'a [f32],
    sel: &'a mut [u32],
    counts: &'a mut [u32],
    cand_counts: &'a mut [u32],
    hist: &'a mut [u32],
    /// Candidate slots of these chunks (empty without candidates).
    keys: &'a mut [u32],
    index: &'a mut [u16],
}

/// [`mark`] over one group of chunks.
fn mark_group<const CANDIDATES: bool>(g: Group<'_>, hi: u32, bin: u32) {
    let hist = table(g.hist);
    hist.fill(0);
    let chunks = g.acc.chunks(CHUNK_ELEMS).zip(g.sel.chunks_mut(CHUNK_WORDS));
    for (c, (acc, sel)) in chunks.enumerate() {
        let mut count = 0u32;
        let mut found = 0usize;
        let (keys, index) = if CANDIDATES {
            (&mut g.keys[c * CHUNK_ELEMS..], &mut g.index[c * CHUNK_ELEMS..])
        } else {
            (&mut [][..], &mut [][..])
        };
        for (w, (xs, word)) in acc.chunks(32).zip(sel.iter_mut()).enumerate() {
            let (bits, mut cands) = mark_word::<CANDIDATES>(xs, hi, bin);
            *word = bits;
            count += bits.count_ones();
            while cands != 0 {
                let j = cands.trailing_zeros() as usize;
                cands &= cands - 1;
                let k = key(xs[j]);
                keys[found] = k;
                index[found] = (32 * w + j) as u16;
                hist[((k >> 9) & 0x7ff) as usize] += 1;
                found += 1;
            }
        }
        g.counts[c] = count;
        g.cand_counts[c] = found as u32;
    }
}

/// Bits of `key >= hi`, and with `CANDIDATES` bits of `key >> 20 == bin`,
/// for up to 32 values.
#[inline(always)]
fn mark_word<const CANDIDATES: bool>(xs: &[f32], hi: u32, bin: u32) -> (u32, u32) {
    let (mut bits, mut cands) = (0u32, 0u32);
    if let Ok(xs) = <&[f32; 32]>::try_from(xs) {
        // Fixed length: unrolled and vectorized.
        for (j, &x) in xs.iter().enumerate() {
            let k = key(x);
            bits |= u32::from(k >= hi) << j;
            if CANDIDATES {
                cands |= u32::from(k >> 20 == bin && k < hi) << j;
            }
        }
    } else {
        for (j, &x) in xs.iter().enumerate() {
            let k = key(x);
            bits |= u32::from(k >= hi) << j;
            if CANDIDATES {
                cands |= u32::from(k >> 20 == bin && k < hi) << j;
            }
        }
    }
    (bits, cands)
}

/// Fills `state.level_hist[..512]` with the level-3 digits of the candidates
/// whose `key >> 9 == want`.
fn candidate_histogram(state: &mut CpuState, want: u32) {
    let chunks = state.chunk_counts.len();
    let groups = state.task_hists.len() / HIST_BINS;
    let per_group = chunks.div_ceil(groups.max(1)).max(1);
    state
        .cand_keys
        .par_chunks(per_group * CHUNK_ELEMS)
        .zip(state.cand_counts.par_chunks(per_group))
        .zip(state.task_hists.par_chunks_mut(HIST_BINS))
        .for_each(|((keys, counts), hist)| {
            let hist = table(hist);
            hist.fill(0);
            for (keys, &m) in keys.chunks(CHUNK_ELEMS).zip(counts) {
                for &k in &keys[..m as usize] {
                    if k >> 9 == want {
                        hist[(k & 0x1ff) as usize] += 1;
                    }
                }
            }
        });
    let used = chunks.div_ceil(per_group);
    sum_tables(&state.task_hists, used, &mut state.level_hist);
}

/// Adds to the selection the candidates with `key >= cut`, plus the first
/// `ties` candidates (in index order) with `key == tie`; updates the counts.
fn take_candidates(state: &mut CpuState, cut: u32, tie: u32, ties: u64) {
    // The ties each chunk takes: the first ones over the whole vector.
    if ties > 0 {
        state
            .cand_keys
            .par_chunks(CHUNK_ELEMS)
            .zip(state.cand_counts.par_iter())
            .zip(state.chunk_ties.par_iter_mut())
            .for_each(|((keys, &m), eq)| *eq = keys[..m as usize].iter().map(|&k| u32::from(k == tie)).sum());
    }
    let mut left = ties;
    for eq in state.chunk_ties.iter_mut() {
        let take = left.min(u64::from(*eq));
        left -= take;
        *eq = take as u32;
    }
    state
        .cand_keys
        .par_chunks(CHUNK_ELEMS)
        .zip(state.cand_index.par_chunks(CHUNK_ELEMS))
        .zip(state.sel.par_chunks_mut(CHUNK_WORDS))
        .zip(state.cand_counts.par_iter().zip(state.chunk_ties.par_iter()))
        .zip(state.chunk_counts.par_iter_mut())
        .for_each(|((((keys, index), sel), (&m, &quota)), count)| {
            let mut quota = quota;
            for (&k, &j) in keys[..m as usize].iter().zip(&index[..m as usize]) {
                let take = k >= cut || (k == tie && quota > 0);
                if take {
                    quota -= u32::from(k < cut);
                    sel[usize::from(j) / 32] |= 1 << (j % 32);
                    *count += 1;
                }
            }
        });
}

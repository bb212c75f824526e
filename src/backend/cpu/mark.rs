//! The selection's one pass over the committed accumulator: for each wire
//! chunk, the bitmap of the entries at or above a cut, those entries' raw
//! bits and chunk-local indices (captured while the chunk is in cache, so
//! that the packer never reads the accumulator again), and for the top-k
//! rules the *candidates* (the entries of the level-1 bin that straddles
//! the boundary, also as raw bits and indices) with their level-2 histogram.

use rayon::prelude::*;

use super::fused::{KEY_MASK, key};
use super::state::CpuState;
use super::tables::SET_LEN;
use crate::wire::layout::CHUNK_ELEMS;

/// Bitmap words per chunk.
pub(super) const CHUNK_WORDS: usize = CHUNK_ELEMS / 32;
/// Level-2 digit: `(key >> LEVEL2_SHIFT) & LEVEL2_MASK`.
const LEVEL2_SHIFT: u32 = 9;
/// Mask of the level-2 digit.
const LEVEL2_MASK: u32 = 0x7ff;

/// What one run of [`mark`] produces besides the bitmap and the marked
/// entries' raw bits and chunk-local indices (in `state.marked_bits` and
/// `state.marked_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// Nothing else.
    Capture,
    /// Also the candidates (entries with `lo <= key < hi`: the straddling
    /// level-1 bin) into `state.cand_bits` and `state.cand_index`, their
    /// count into `state.cand_counts` and their level-2 histogram into
    /// `state.level_hist`.
    Candidates {
        /// The smallest candidate key.
        lo: u32,
    },
}

/// Fills, for every chunk `c`, bit `j` of word `w` of `state.sel` (element
/// `65536 c + 32 w + j`) with `key >= hi`, `state.chunk_counts[c]` with the
/// number of such keys, `state.cand_counts[c]` with the number of candidates
/// (0 unless `what` asks for them) and the rest as `what` says. Lists are
/// written from the chunk's start, in index order.
pub(super) fn mark(state: &mut CpuState, hi: u32, what: Mark) {
    match what {
        Mark::Capture => mark_with::<false>(state, hi, hi),
        Mark::Candidates { lo } => mark_with::<true>(state, hi, lo),
    }
}

/// [`mark`], monomorphized so that the loop without candidates carries no
/// candidate work. The candidate lists may be empty buffers (see
/// `CpuState::new`), so only that variant zips them.
fn mark_with<const CANDIDATES: bool>(state: &mut CpuState, hi: u32, lo: u32) {
    let tables = &state.tables;
    tables.zero();
    let work = state
        .acc
        .par_chunks(CHUNK_ELEMS)
        .zip(state.sel.par_chunks_mut(CHUNK_WORDS))
        .zip(state.chunk_counts.par_iter_mut().zip(state.cand_counts.par_iter_mut()));
    let run = |acc: &[f32], out: Out<'_>, (count, found): (&mut u32, &mut u32)| {
        (*count, *found) = tables.with(|hist| mark_chunk_best::<CANDIDATES>(acc, out, hist, hi, lo));
    };
    let marked = state.marked_bits.par_chunks_mut(CHUNK_ELEMS).zip(state.marked_index.par_chunks_mut(CHUNK_ELEMS));
    if CANDIDATES {
        let lists =
            marked.zip(state.cand_bits.par_chunks_mut(CHUNK_ELEMS).zip(state.cand_index.par_chunks_mut(CHUNK_ELEMS)));
        work.zip(lists).for_each(|(((acc, sel), counts), ((marked_bits, marked_index), (cand_bits, cand_index)))| {
            run(acc, Out { sel, marked_bits, marked_index, cand_bits, cand_index }, counts);
        });
    } else {
        work.zip(marked).for_each(|(((acc, sel), counts), (marked_bits, marked_index))| {
            let out = Out { sel, marked_bits, marked_index, cand_bits: &mut [], cand_index: &mut [] };
            run(acc, out, counts);
        });
    }
    tables.sum_into(&mut state.level_hist);
}

/// One chunk's outputs of [`mark`] (lists from the chunk's start).
struct Out<'a> {
    /// The chunk's bitmap words.
    sel: &'a mut [u32],
    /// Raw bits of the marked entries.
    marked_bits: &'a mut [u32],
    /// Their chunk-local indices.
    marked_index: &'a mut [u16],
    /// Raw bits of the candidates (`Candidates` only).
    cand_bits: &'a mut [u32],
    /// Chunk-local indices of the candidates (`Candidates` only).
    cand_index: &'a mut [u16],
}

/// [`mark_chunk`] compiled for AVX2 where the CPU has it (same integer
/// operations, so the same results), else as it is. Why: on a 2-core
/// machine the 4-wide SSE2 build, with candidates, issues about as many
/// instructions per byte as memory delivers, so it falls behind the
/// stream; 8-wide compares halve the vector work (measured: top-k 1%
/// select + pack about 0.3-0.8 ms faster at n = 2^24).
#[inline(always)]
fn mark_chunk_best<const CANDIDATES: bool>(
    acc: &[f32],
    out: Out<'_>,
    hist: &mut [u32; SET_LEN],
    hi: u32,
    lo: u32,
) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if super::fused_x86::available() && !portable_only() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { mark_chunk_avx2::<CANDIDATES>(acc, out, hist, hi, lo) };
    }
    mark_chunk::<CANDIDATES>(acc, out, hist, hi, lo)
}

/// Test hook: while set, [`mark_chunk_best`] runs the portable code, so that
/// tests on an AVX2 machine cover both builds of the loop.
#[cfg(test)]
pub(super) static PORTABLE_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`PORTABLE_ONLY`] is set (never outside tests).
#[inline(always)]
fn portable_only() -> bool {
    #[cfg(test)]
    return PORTABLE_ONLY.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(test))]
    false
}

/// [`mark_chunk`], inlined into a function the compiler may vectorize with
/// AVX2. Safety: only call it on a CPU with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mark_chunk_avx2<const CANDIDATES: bool>(
    acc: &[f32],
    out: Out<'_>,
    hist: &mut [u32; SET_LEN],
    hi: u32,
    lo: u32,
) -> (u32, u32) {
    mark_chunk::<CANDIDATES>(acc, out, hist, hi, lo)
}

/// [`mark`] over one chunk `acc`. Returns the count of keys `>= hi` and of
/// candidates; adds the candidates' level-2 digits to `hist`.
#[inline(always)]
fn mark_chunk<const CANDIDATES: bool>(
    acc: &[f32],
    out: Out<'_>,
    hist: &mut [u32; SET_LEN],
    hi: u32,
    lo: u32,
) -> (u32, u32) {
    let Out { sel, marked_bits, marked_index, cand_bits, cand_index } = out;
    // `key >= t` as the signed compare `key > t - 1`, which SSE2 has (keys
    // are below 2^31): `t = 0` gives -1 (every key), `t = 2^31` gives
    // `i32::MAX` (none).
    let (above_hi, above_lo) = (hi.wrapping_sub(1) as i32, lo.wrapping_sub(1) as i32);
    let mut count = 0usize;
    let mut found = 0usize;
    for (w, (xs, word)) in acc.chunks(32).zip(sel.iter_mut()).enumerate() {
        let (bits, at_lo) = mark_word::<CANDIDATES>(xs, above_hi, above_lo);
        let cands = at_lo & !bits;
        *word = bits;
        push(bits, xs, w, marked_bits, marked_index, &mut count);
        if CANDIDATES {
            push(cands, xs, w, cand_bits, cand_index, &mut found);
        }
    }
    // From the list (in L1 by now) rather than in the loop above, which
    // then has no read-modify-write of a counter per candidate.
    for &b in cand_bits.get(..found).unwrap_or_default() {
        hist[(((b & KEY_MASK) >> LEVEL2_SHIFT) & LEVEL2_MASK) as usize] += 1;
    }
    (count as u32, found as u32)
}

/// Appends the entries of word `w` (values `xs`) whose bits are set in
/// `mask`, as raw bits and chunk-local indices, at `*at` of `bits` and
/// `index`; advances `*at`.
///
/// Sparse masks are the common case: most words are empty and most others
/// hold a single bit, with no pattern a branch predictor could learn. So the
/// first two entries are written without a branch on `mask` (an empty slot
/// is written and then not counted, and overwritten by the next entry), and
/// only a third bit and beyond take the loop.
#[inline(always)]
fn push(mask: u32, xs: &[f32], w: usize, bits: &mut [u32], index: &mut [u16], at: &mut usize) {
    let mut mask = mask;
    for _ in 0..2 {
        // `& 31`: an empty mask points at entry 0, which every word has.
        let j = (mask.trailing_zeros() & 31) as usize;
        if let (Some(b), Some(i), Some(x)) = (bits.get_mut(*at), index.get_mut(*at), xs.get(j)) {
            (*b, *i) = (x.to_bits(), (32 * w + j) as u16);
        }
        *at += usize::from(mask != 0);
        mask &= mask.wrapping_sub(1);
    }
    while mask != 0 {
        let j = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        if let (Some(b), Some(i), Some(x)) = (bits.get_mut(*at), index.get_mut(*at), xs.get(j)) {
            (*b, *i) = (x.to_bits(), (32 * w + j) as u16);
        }
        *at += 1;
    }
}

/// Bits of `key > above_hi` and, with `CANDIDATES`, of `key > above_lo`,
/// for up to 32 values (keys as `i32`).
#[inline(always)]
fn mark_word<const CANDIDATES: bool>(xs: &[f32], above_hi: i32, above_lo: i32) -> (u32, u32) {
    let (mut bits, mut at_lo) = (0u32, 0u32);
    if let Ok(xs) = <&[f32; 32]>::try_from(xs) {
        // Fixed length: unrolled and vectorized.
        for (j, &x) in xs.iter().enumerate() {
            let k = key(x) as i32;
            bits |= u32::from(k > above_hi) << j;
            if CANDIDATES {
                at_lo |= u32::from(k > above_lo) << j;
            }
        }
    } else {
        for (j, &x) in xs.iter().enumerate() {
            let k = key(x) as i32;
            bits |= u32::from(k > above_hi) << j;
            if CANDIDATES {
                at_lo |= u32::from(k > above_lo) << j;
            }
        }
    }
    (bits, at_lo)
}

//! Operation 2: the selected entries of the committed accumulator written as
//! one packed buffer (docs/wire-format.md), by order-preserving compaction:
//! per-chunk counts in parallel, exclusive prefix sums (the layout), then
//! every chunk's index section and values written in parallel into disjoint
//! parts of the staging buffer, and the checksum as a parallel wrapping sum.

use std::ops::Range;

use rayon::prelude::*;

use super::arch;
use super::select::{self, CHUNK_WORDS};
use super::state::CpuState;
use crate::config::WireDtype;
use crate::wire::checksum::word_term;
use crate::wire::layout::{self, CHECKSUM_OFFSET, CHUNK_ELEMS, FORMAT_VERSION, HEADER_BYTES, MAGIC};
use crate::wire::quantize::quantize;

/// Words per checksum task.
const CHECKSUM_WORDS: usize = 16 * 1024;
/// Entries below which a range of chunks is written by one task (splitting
/// further costs more than it saves).
const MIN_SPLIT_ENTRIES: u64 = 4096;
/// How many bitmap words (of 32 elements) ahead the packer prefetches.
const PREFETCH_WORDS: usize = 32;

/// Selects, packs into `state.packed` and returns the packed length.
pub(super) fn select_pack(state: &mut CpuState) -> usize {
    state.refresh_stats();
    select::select(state);
    let total = lay_out(state);
    write(state, total);
    total
}

/// The layout of docs/wire-format.md for `state.chunk_counts` (the same
/// arithmetic as [`layout::Layout::new`], into preallocated tables). Returns
/// the total length.
fn lay_out(state: &mut CpuState) -> usize {
    let n = state.n as u64;
    let mut at = layout::index_base(n);
    let mut count = 0u64;
    for (c, &k) in state.chunk_counts.iter().enumerate() {
        state.index_offsets[c] = at;
        state.entry_offsets[c] = count;
        at += layout::index_section_bytes(k, layout::chunk_len(n, c as u64));
        count += u64::from(k);
    }
    if let Some(last) = state.index_offsets.last_mut() {
        *last = at;
    }
    (at + layout::values_bytes(count, state.dtype)) as usize
}

/// What the chunk writers share.
struct Ctx<'a> {
    acc: &'a [f32],
    sel: &'a [u32],
    counts: &'a [u32],
    index_offsets: &'a [u64],
    entry_offsets: &'a [u64],
    dtype: WireDtype,
    /// Entries in the whole buffer.
    total: u64,
}

impl Ctx<'_> {
    /// Entries in the chunks before chunk `c` (`c` up to the chunk count).
    fn entries_before(&self, c: usize) -> u64 {
        self.entry_offsets.get(c).copied().unwrap_or(self.total)
    }
}

/// Writes header, chunk table, index sections, values, padding and checksum.
fn write(state: &mut CpuState, total: usize) {
    let n = state.n as u64;
    let chunks = state.chunk_counts.len();
    let count =
        state.entry_offsets.last().copied().unwrap_or(0) + state.chunk_counts.last().copied().map_or(0, u64::from);
    let ctx = Ctx {
        acc: &state.acc,
        sel: &state.sel,
        counts: &state.chunk_counts,
        index_offsets: &state.index_offsets,
        entry_offsets: &state.entry_offsets,
        dtype: state.dtype,
        total: count,
    };
    let out = &mut state.packed[..total];
    let (head, rest) = out.split_at_mut(HEADER_BYTES);
    head[0..4].copy_from_slice(&MAGIC);
    head[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[6] = state.dtype.code();
    head[7] = 0;
    head[8..16].copy_from_slice(&n.to_le_bytes());
    head[16..24].copy_from_slice(&count.to_le_bytes());
    head[24..32].fill(0);
    let (table, rest) = rest.split_at_mut(4 * chunks);
    for (slot, &k) in table.chunks_exact_mut(4).zip(ctx.counts) {
        slot.copy_from_slice(&k.to_le_bytes());
    }
    let index_len = (ctx.index_offsets[chunks] - ctx.index_offsets[0]) as usize;
    let (index, rest) = rest.split_at_mut(index_len);
    let (values, padding) = rest.split_at_mut(count as usize * ctx.dtype.size());
    padding.fill(0);
    write_range(&ctx, 0..chunks, index, values);

    let sum = out
        .par_chunks(4 * CHECKSUM_WORDS)
        .enumerate()
        .map(|(task, bytes)| {
            let first = task * CHECKSUM_WORDS;
            bytes.chunks_exact(4).enumerate().fold(0u32, |sum, (w, b)| {
                let i = first + w;
                if i == CHECKSUM_OFFSET / 4 {
                    sum
                } else {
                    sum.wrapping_add(word_term(i as u32, u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                }
            })
        })
        .reduce(|| 0, u32::wrapping_add);
    out[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Writes chunks `range`, whose index sections are `index` and values
/// `values` (both starting at the range's first chunk), splitting the range
/// in two parallel halves while it is large.
fn write_range(ctx: &Ctx<'_>, range: Range<usize>, index: &mut [u8], values: &mut [u8]) {
    let entries = ctx.entries_before(range.end) - ctx.entries_before(range.start);
    if range.len() > 1 && entries >= MIN_SPLIT_ENTRIES {
        let mid = range.start + range.len() / 2;
        let index_mid = (ctx.index_offsets[mid] - ctx.index_offsets[range.start]) as usize;
        let values_mid = (ctx.entry_offsets[mid] - ctx.entry_offsets[range.start]) as usize * ctx.dtype.size();
        let (index_lo, index_hi) = index.split_at_mut(index_mid);
        let (values_lo, values_hi) = values.split_at_mut(values_mid);
        rayon::join(
            || write_range(ctx, range.start..mid, index_lo, values_lo),
            || write_range(ctx, mid..range.end, index_hi, values_hi),
        );
        return;
    }
    let (mut index, mut values) = (index, values);
    for c in range {
        let count = ctx.counts[c];
        let index_len = (ctx.index_offsets[c + 1] - ctx.index_offsets[c]) as usize;
        let (idx, index_rest) = std::mem::take(&mut index).split_at_mut(index_len);
        let (vals, values_rest) = std::mem::take(&mut values).split_at_mut(count as usize * ctx.dtype.size());
        (index, values) = (index_rest, values_rest);
        if count == 0 {
            continue;
        }
        let start = c * CHUNK_ELEMS;
        let len = CHUNK_ELEMS.min(ctx.acc.len() - start);
        let acc = &ctx.acc[start..start + len];
        let sel = &ctx.sel[c * CHUNK_WORDS..c * CHUNK_WORDS + len.div_ceil(32)];
        let bitmap = layout::uses_bitmap(count, len as u32);
        match ctx.dtype {
            WireDtype::F32 => write_chunk::<4>(acc, sel, bitmap, idx, vals, |x| quantize(x, WireDtype::F32)),
            WireDtype::F16 => write_chunk::<2>(acc, sel, bitmap, idx, vals, |x| quantize(x, WireDtype::F16)),
            WireDtype::Bf16 => write_chunk::<2>(acc, sel, bitmap, idx, vals, |x| quantize(x, WireDtype::Bf16)),
        }
    }
}

/// Writes one chunk with at least one selected entry, from its selection
/// bitmap `sel`: the index section `idx` (the bitmap itself, or a `u16` list
/// with its padding) and the values `vals` (`SIZE` bytes each, from `q`).
fn write_chunk<const SIZE: usize>(
    acc: &[f32],
    sel: &[u32],
    bitmap: bool,
    idx: &mut [u8],
    vals: &mut [u8],
    q: impl Fn(f32) -> u32,
) {
    let mut vals = vals.chunks_exact_mut(SIZE);
    if bitmap {
        for (slot, &word) in idx.chunks_exact_mut(4).zip(sel) {
            slot.copy_from_slice(&word.to_le_bytes());
        }
    }
    let mut slots = idx.chunks_exact_mut(2);
    let mut emit = |j: usize, x: f32| {
        if !bitmap {
            if let Some(slot) = slots.next() {
                slot.copy_from_slice(&(j as u16).to_le_bytes());
            }
        }
        if let Some(slot) = vals.next() {
            slot.copy_from_slice(&q(x).to_le_bytes()[..SIZE]);
        }
    };
    for ((w, &word), xs) in sel.iter().enumerate().zip(acc.chunks(32)) {
        // Start the loads of a word a few ahead, so that several misses
        // are in flight while this word's values are converted.
        if let Some(&ahead) = sel.get(w + PREFETCH_WORDS) {
            let base = 32 * (w + PREFETCH_WORDS);
            if ahead & 0xffff != 0 {
                arch::prefetch(acc, base + (ahead & 0xffff).trailing_zeros() as usize);
            }
            if ahead >> 16 != 0 {
                arch::prefetch(acc, base + 16 + (ahead >> 16).trailing_zeros() as usize);
            }
        }
        if word == u32::MAX {
            // A full word (the common case of dense selections): no bit scan.
            for (j, &x) in xs.iter().enumerate() {
                emit(32 * w + j, x);
            }
            continue;
        }
        let mut bits = word;
        while bits != 0 {
            let j = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(&x) = xs.get(j) {
                emit(32 * w + j, x);
            }
        }
    }
    if !bitmap {
        // The padding `u16` of an odd count.
        for slot in slots {
            slot.fill(0);
        }
    }
}

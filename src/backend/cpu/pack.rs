//! Operation 2: the selected entries of the committed accumulator written as
//! one packed buffer (docs/wire-format.md), by order-preserving compaction:
//! per-chunk counts in parallel, exclusive prefix sums (the layout), then
//! every chunk's index section and values written in parallel into disjoint
//! parts of the staging buffer, and the checksum as a parallel wrapping sum.

use std::ops::Range;

use rayon::prelude::*;

use super::fused::key;
use super::select::{self, Cut};
use super::state::CpuState;
use crate::config::WireDtype;
use crate::wire::checksum::word_term;
use crate::wire::layout::{
    self, CHECKSUM_OFFSET, CHUNK_ELEMS, FORMAT_VERSION, HEADER_BYTES, MAGIC,
};
use crate::wire::quantize::quantize;

/// Words per checksum task.
const CHECKSUM_WORDS: usize = 16 * 1024;
/// Entries below which a range of chunks is written by one task (splitting
/// further costs more than it saves).
const MIN_SPLIT_ENTRIES: u64 = 4096;

/// Selects, packs into `state.packed` and returns the packed length.
pub(super) fn select_pack(state: &mut CpuState) -> usize {
    state.refresh_stats();
    let cut = select::cut(state);
    count_chunks(state, cut);
    let total = lay_out(state);
    write(state, cut, total);
    total
}

/// Fills `state.chunk_counts` (and, for an exact cut, `state.chunk_ties`
/// with the ties each chunk takes: the first ones in index order).
fn count_chunks(state: &mut CpuState, cut: Cut) {
    let acc = state.acc.par_chunks(CHUNK_ELEMS);
    match cut {
        Cut::AtLeast(0) => {
            acc.zip(state.chunk_counts.par_iter_mut())
                .for_each(|(a, count)| *count = a.len() as u32);
        }
        Cut::AtLeast(cut) => {
            acc.zip(state.chunk_counts.par_iter_mut())
                .for_each(|(a, count)| {
                    *count = a.iter().map(|&x| u32::from(key(x) >= cut)).sum();
                });
        }
        Cut::Exact { key: t, ties } => {
            acc.zip(
                state
                    .chunk_above
                    .par_iter_mut()
                    .zip(state.chunk_ties.par_iter_mut()),
            )
            .for_each(|(a, (above, equal))| {
                let (mut gt, mut eq) = (0u32, 0u32);
                for &x in a {
                    let k = key(x);
                    gt += u32::from(k > t);
                    eq += u32::from(k == t);
                }
                (*above, *equal) = (gt, eq);
            });
            let mut left = ties;
            for ((count, above), taken) in state
                .chunk_counts
                .iter_mut()
                .zip(&state.chunk_above)
                .zip(&mut state.chunk_ties)
            {
                let take = left.min(u64::from(*taken)) as u32;
                left -= u64::from(take);
                *taken = take;
                *count = above + take;
            }
        }
    }
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
    cut: Cut,
    counts: &'a [u32],
    ties: &'a [u32],
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
fn write(state: &mut CpuState, cut: Cut, total: usize) {
    let n = state.n as u64;
    let chunks = state.chunk_counts.len();
    let count = state.entry_offsets.last().copied().unwrap_or(0)
        + state.chunk_counts.last().copied().map_or(0, u64::from);
    let ctx = Ctx {
        acc: &state.acc,
        cut,
        counts: &state.chunk_counts,
        ties: &state.chunk_ties,
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
                    sum.wrapping_add(word_term(
                        i as u32,
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    ))
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
        let values_mid =
            (ctx.entry_offsets[mid] - ctx.entry_offsets[range.start]) as usize * ctx.dtype.size();
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
        let (vals, values_rest) =
            std::mem::take(&mut values).split_at_mut(count as usize * ctx.dtype.size());
        (index, values) = (index_rest, values_rest);
        if count == 0 {
            continue;
        }
        let start = c * CHUNK_ELEMS;
        let acc = &ctx.acc[start..(start + CHUNK_ELEMS).min(ctx.acc.len())];
        let pick = match ctx.cut {
            Cut::AtLeast(cut) => Pick::AtLeast(cut),
            Cut::Exact { key, .. } => Pick::Exact {
                key,
                quota: ctx.ties[c],
            },
        };
        let bitmap = layout::uses_bitmap(count, acc.len() as u32);
        match ctx.dtype {
            WireDtype::F32 => write_chunk::<4>(acc, pick, count, bitmap, idx, vals, |x| {
                quantize(x, WireDtype::F32)
            }),
            WireDtype::F16 => write_chunk::<2>(acc, pick, count, bitmap, idx, vals, |x| {
                quantize(x, WireDtype::F16)
            }),
            WireDtype::Bf16 => write_chunk::<2>(acc, pick, count, bitmap, idx, vals, |x| {
                quantize(x, WireDtype::Bf16)
            }),
        }
    }
}

/// The selection predicate inside one chunk, in index order.
#[derive(Clone, Copy)]
enum Pick {
    AtLeast(u32),
    /// Keys above `key`, and the next `quota` keys equal to it.
    Exact {
        key: u32,
        quota: u32,
    },
}

impl Pick {
    #[inline(always)]
    fn take(&mut self, x: f32) -> bool {
        let k = key(x);
        match self {
            Pick::AtLeast(cut) => k >= *cut,
            Pick::Exact { key, quota } => {
                if k > *key {
                    true
                } else if k == *key && *quota > 0 {
                    *quota -= 1;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// Writes one chunk holding `count > 0` selected entries: its index section
/// `idx` (a bitmap or a `u16` list, with padding) and its values `vals`
/// (`SIZE` bytes each, from `q`).
fn write_chunk<const SIZE: usize>(
    acc: &[f32],
    mut pick: Pick,
    count: u32,
    bitmap: bool,
    idx: &mut [u8],
    vals: &mut [u8],
    q: impl Fn(f32) -> u32,
) {
    let mut vals = vals.chunks_exact_mut(SIZE);
    let mut put = |x: f32| {
        if let Some(slot) = vals.next() {
            slot.copy_from_slice(&q(x).to_le_bytes()[..SIZE]);
        }
    };
    if bitmap {
        for (word_bytes, xs) in idx.chunks_exact_mut(4).zip(acc.chunks(32)) {
            let mut word = 0u32;
            for (j, &x) in xs.iter().enumerate() {
                if pick.take(x) {
                    word |= 1 << j;
                    put(x);
                }
            }
            word_bytes.copy_from_slice(&word.to_le_bytes());
        }
    } else {
        let mut slots = idx.chunks_exact_mut(2);
        let mut left = count;
        for (j, &x) in acc.iter().enumerate() {
            if pick.take(x) {
                if let Some(slot) = slots.next() {
                    slot.copy_from_slice(&(j as u16).to_le_bytes());
                }
                put(x);
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        // The padding `u16` of an odd count.
        for slot in slots {
            slot.fill(0);
        }
    }
}

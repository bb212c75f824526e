//! Operation 2: the selected entries of the committed accumulator written as
//! one packed buffer (docs/wire-format.md), by order-preserving compaction:
//! the selection (`select`: bitmap, per-chunk counts and the selected
//! values, in one pass over the accumulator), exclusive prefix sums of the
//! counts (the layout), then every chunk's index section and values written
//! in parallel into disjoint parts of the staging buffer (`pack_chunks`),
//! and the checksum as a parallel wrapping sum.

use rayon::prelude::*;

use super::pack_chunks::Chunks;
use super::select;
use super::state::CpuState;
use crate::wire::checksum::word_term;
use crate::wire::layout::{self, CHECKSUM_OFFSET, FORMAT_VERSION, HEADER_BYTES, MAGIC};

/// Words per checksum task.
const CHECKSUM_WORDS: usize = 16 * 1024;

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

/// Writes header, chunk table, index sections, values, padding and checksum.
fn write(state: &mut CpuState, total: usize) {
    let n = state.n as u64;
    let chunks = state.chunk_counts.len();
    let count =
        state.entry_offsets.last().copied().unwrap_or(0) + state.chunk_counts.last().copied().map_or(0, u64::from);
    let dtype = state.dtype;
    let index_len = (state.index_offsets[chunks] - state.index_offsets[0]) as usize;
    let (chunks_out, packed) = Chunks::split(state, count);
    let out = &mut packed[..total];
    let (head, rest) = out.split_at_mut(HEADER_BYTES);
    head[0..4].copy_from_slice(&MAGIC);
    head[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[6] = dtype.code();
    head[7] = 0;
    head[8..16].copy_from_slice(&n.to_le_bytes());
    head[16..24].copy_from_slice(&count.to_le_bytes());
    head[24..32].fill(0);
    let (table, rest) = rest.split_at_mut(4 * chunks);
    for (slot, &k) in table.chunks_exact_mut(4).zip(chunks_out.counts()) {
        slot.copy_from_slice(&k.to_le_bytes());
    }
    let (index, rest) = rest.split_at_mut(index_len);
    let (values, padding) = rest.split_at_mut(count as usize * dtype.size());
    padding.fill(0);
    chunks_out.write_range(0..chunks, index, values);

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

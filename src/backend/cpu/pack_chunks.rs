//! The per-chunk parts of the packed buffer: every chunk's index section (its
//! selection bitmap copied, or a `u16` list) and its values, written in
//! parallel into disjoint parts of the staging buffer.
//!
//! Where they come from: `Dense` reads the accumulator in order (every entry
//! is sent; the hardware prefetcher keeps up) and its bitmap. Every other
//! rule merges the two lists of (index, raw bits) the selection left per
//! chunk (see `select::select`), so the packer never loads the accumulator
//! at the scattered selected positions (by then those lines were evicted,
//! and a sparse pattern defeats the prefetcher, so each value would cost a
//! full memory latency), nor scans a list chunk's mostly empty bitmap (one
//! hard-to-predict branch per word).

use std::ops::Range;

use super::mark::CHUNK_WORDS;
use super::state::CpuState;
use crate::config::{Selection, WireDtype};
use crate::wire::layout::{self, CHUNK_ELEMS};
use crate::wire::quantize::{quantize, quantize_bf16_finite};

/// Entries below which a range of chunks is written by one task (splitting
/// further costs more than it saves).
const MIN_SPLIT_ENTRIES: u64 = 4096;

/// What the chunk writers share (read-only views of the state).
pub(super) struct Chunks<'a> {
    acc: &'a [f32],
    /// True when the entries are read from `acc` (`Dense`).
    from_acc: bool,
    sel: &'a [u32],
    counts: &'a [u32],
    cand_counts: &'a [u32],
    cand_bits: &'a [u32],
    cand_index: &'a [u16],
    marked_bits: &'a [u32],
    marked_index: &'a [u16],
    index_offsets: &'a [u64],
    entry_offsets: &'a [u64],
    dtype: WireDtype,
    /// Entries in the whole buffer.
    total: u64,
}

/// Where one chunk's entries come from.
enum Source<'a> {
    /// The chunk's accumulator (the bitmap says which entries).
    Acc(&'a [f32]),
    /// Two disjoint lists, each in index order: the entries marked at or
    /// above the cut and the taken candidates.
    Lists(List<'a>, List<'a>),
}

/// Entries as parallel slices of chunk-local indices and raw f32 bits.
struct List<'a> {
    index: &'a [u16],
    bits: &'a [u32],
}

impl<'a> Chunks<'a> {
    /// Splits `state` after the selection into the writers' read-only views
    /// (for `total` entries) and the staging buffer they write into.
    pub(super) fn split(state: &'a mut CpuState, total: u64) -> (Chunks<'a>, &'a mut [u8]) {
        let CpuState {
            acc,
            selection,
            sel,
            chunk_counts,
            cand_counts,
            cand_bits,
            cand_index,
            marked_bits,
            marked_index,
            index_offsets,
            entry_offsets,
            dtype,
            packed,
            ..
        } = state;
        let chunks = Chunks {
            acc,
            from_acc: matches!(selection, Selection::Dense),
            sel,
            counts: chunk_counts,
            cand_counts,
            cand_bits,
            cand_index,
            marked_bits,
            marked_index,
            index_offsets,
            entry_offsets,
            dtype: *dtype,
            total,
        };
        (chunks, packed)
    }

    /// Entries per chunk (the chunk table).
    pub(super) fn counts(&self) -> &'a [u32] {
        self.counts
    }

    /// Entries in the chunks before chunk `c` (`c` up to the chunk count).
    fn entries_before(&self, c: usize) -> u64 {
        self.entry_offsets.get(c).copied().unwrap_or(self.total)
    }

    /// Where chunk `c`'s `count` entries come from.
    fn source(&self, c: usize, count: usize) -> Source<'a> {
        let start = c * CHUNK_ELEMS;
        if self.from_acc {
            return Source::Acc(&self.acc[start..(start + CHUNK_ELEMS).min(self.acc.len())]);
        }
        let taken = self.cand_counts[c] as usize;
        // `get`: the candidate buffers are empty for the rules without candidates.
        let list = |index: &'a [u16], bits: &'a [u32], len: usize| {
            let range = start..start + len;
            List { index: index.get(range.clone()).unwrap_or_default(), bits: bits.get(range).unwrap_or_default() }
        };
        Source::Lists(
            list(self.marked_index, self.marked_bits, count - taken),
            list(self.cand_index, self.cand_bits, taken),
        )
    }

    /// Writes chunks `range`, whose index sections are `index` and values
    /// `values` (both starting at the range's first chunk), splitting the
    /// range in two parallel halves while it is large.
    pub(super) fn write_range(&self, range: Range<usize>, index: &mut [u8], values: &mut [u8]) {
        let entries = self.entries_before(range.end) - self.entries_before(range.start);
        if range.len() > 1 && entries >= MIN_SPLIT_ENTRIES {
            let mid = range.start + range.len() / 2;
            let index_mid = (self.index_offsets[mid] - self.index_offsets[range.start]) as usize;
            let values_mid = (self.entry_offsets[mid] - self.entry_offsets[range.start]) as usize * self.dtype.size();
            let (index_lo, index_hi) = index.split_at_mut(index_mid);
            let (values_lo, values_hi) = values.split_at_mut(values_mid);
            rayon::join(
                || self.write_range(range.start..mid, index_lo, values_lo),
                || self.write_range(mid..range.end, index_hi, values_hi),
            );
            return;
        }
        let (mut index, mut values) = (index, values);
        for c in range {
            let count = self.counts[c] as usize;
            let index_len = (self.index_offsets[c + 1] - self.index_offsets[c]) as usize;
            let (idx, index_rest) = std::mem::take(&mut index).split_at_mut(index_len);
            let (vals, values_rest) = std::mem::take(&mut values).split_at_mut(count * self.dtype.size());
            (index, values) = (index_rest, values_rest);
            if count == 0 {
                continue;
            }
            let len = CHUNK_ELEMS.min(self.acc.len() - c * CHUNK_ELEMS);
            let sel = &self.sel[c * CHUNK_WORDS..c * CHUNK_WORDS + len.div_ceil(32)];
            let list = if layout::uses_bitmap(count as u32, len as u32) {
                for (slot, &word) in idx.chunks_exact_mut(4).zip(sel) {
                    slot.copy_from_slice(&word.to_le_bytes());
                }
                None
            } else {
                Some(idx)
            };
            let src = self.source(c, count);
            // The committed accumulator is always finite (a step with a
            // non-finite `acc'` is refused before its commit), so the bf16
            // fast path applies.
            match self.dtype {
                WireDtype::F32 => write_entries::<4>(src, sel, list, vals, |x| quantize(x, WireDtype::F32)),
                WireDtype::F16 => write_entries::<2>(src, sel, list, vals, |x| quantize(x, WireDtype::F16)),
                WireDtype::Bf16 => write_entries::<2>(src, sel, list, vals, |x| u32::from(quantize_bf16_finite(x))),
            }
        }
    }
}

/// A chunk's values (`SIZE` bytes each, from `q`) from `src` into `vals`
/// and, for a list chunk, its index list and the zero padding `u16` of an
/// odd count into `list`, all in index order; `sel` is the chunk's bitmap.
fn write_entries<const SIZE: usize>(
    src: Source<'_>,
    sel: &[u32],
    list: Option<&mut [u8]>,
    vals: &mut [u8],
    q: impl Fn(f32) -> u32,
) {
    if let Source::Lists(marked, cands) = &src {
        if cands.index.is_empty() {
            // No candidate taken (every chunk of a rule without candidates):
            // the marked list is the chunk's entries as they are, so both
            // sections are straight copies.
            if let Some(idx) = list {
                let (body, padding) = idx.split_at_mut(2 * marked.index.len().min(idx.len() / 2));
                for (slot, &j) in body.chunks_exact_mut(2).zip(marked.index) {
                    slot.copy_from_slice(&j.to_le_bytes());
                }
                padding.fill(0);
            }
            for (slot, &b) in vals.chunks_exact_mut(SIZE).zip(marked.bits) {
                slot.copy_from_slice(&q(f32::from_bits(b)).to_le_bytes()[..SIZE]);
            }
            return;
        }
    }
    if let Source::Acc(acc) = &src {
        if vals.len() == SIZE * acc.len() {
            // Every entry of the chunk is sent (`Dense`): the values in
            // order, without walking the bitmap.
            if let Some(idx) = list {
                // Only a chunk of one entry: a 2-byte list ties a 4-byte bitmap.
                let (body, padding) = idx.split_at_mut(2 * acc.len().min(idx.len() / 2));
                for (j, slot) in body.chunks_exact_mut(2).enumerate() {
                    slot.copy_from_slice(&(j as u16).to_le_bytes());
                }
                padding.fill(0);
            }
            for (slot, &x) in vals.chunks_exact_mut(SIZE).zip(*acc) {
                slot.copy_from_slice(&q(x).to_le_bytes()[..SIZE]);
            }
            return;
        }
    }
    let mut values = vals.chunks_exact_mut(SIZE);
    let mut slots = list.map(|idx| idx.chunks_exact_mut(2));
    let mut emit = |j: u16, x: f32| {
        if let Some(slot) = slots.as_mut().and_then(|s| s.next()) {
            slot.copy_from_slice(&j.to_le_bytes());
        }
        if let Some(slot) = values.next() {
            slot.copy_from_slice(&q(x).to_le_bytes()[..SIZE]);
        }
    };
    match src {
        Source::Acc(acc) => {
            for (w, (&word, xs)) in sel.iter().zip(acc.chunks(32)).enumerate() {
                if word == u32::MAX {
                    // A full word (every word of `Dense` but a short last one).
                    for (j, &x) in xs.iter().enumerate() {
                        emit((32 * w + j) as u16, x);
                    }
                    continue;
                }
                let mut bits = word;
                while bits != 0 {
                    let j = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if let Some(&x) = xs.get(j) {
                        emit((32 * w + j) as u16, x);
                    }
                }
            }
        }
        Source::Lists(marked, cands) => {
            // Merge by index (the two lists are disjoint).
            let mut cand = cands.index.iter().zip(cands.bits).peekable();
            for (&j, &bits) in marked.index.iter().zip(marked.bits) {
                while let Some((&i, &b)) = cand.next_if(|&(&i, _)| i < j) {
                    emit(i, f32::from_bits(b));
                }
                emit(j, f32::from_bits(bits));
            }
            cand.for_each(|(&i, &b)| emit(i, f32::from_bits(b)));
        }
    }
    if let Some(slots) = slots {
        for slot in slots {
            slot.fill(0);
        }
    }
}

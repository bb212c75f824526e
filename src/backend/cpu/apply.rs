//! Operation 3: `theta_i += weight * sum_r v_r,i` over every rank's packed
//! buffer, then error feedback on this rank's own entries.
//!
//! Chunks are disjoint index ranges, so they are applied in parallel with no
//! atomics and no dense scratch: for chunk `c`, a cursor per rank walks that
//! rank's entries for the chunk (in increasing index order) and the cursors
//! are merged, adding the values of equal indices in rank order.

use rayon::prelude::*;

use super::state::CpuState;
use crate::collective::Gathered;
use crate::config::WireDtype;
use crate::error::{CollectiveError, Error, Result, WireError};
use crate::wire::ChunkTable;
use crate::wire::layout::CHUNK_ELEMS;
use crate::wire::quantize::dequantize;

/// `Cursor::head` once a cursor has no entries left.
const DONE: u32 = u32::MAX;

/// One rank's entries inside one chunk, as byte offsets into the gathered
/// bytes (no borrows, so cursors live in the state across steps).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    /// Next unread byte of the index section.
    index_at: usize,
    /// Whether the index section is a bitmap (else a `u16` list).
    bitmap: bool,
    /// Bitmap: bits of the current word not yet visited.
    word: u32,
    /// Bitmap: local index of bit 0 of the next word to load.
    next_word_base: u32,
    /// Bitmap: local index of bit 0 of `word`.
    word_base: u32,
    /// Byte offset of the next value.
    value_at: usize,
    /// Entries not yet visited (the head included once loaded).
    left: u32,
    /// Local index of the current entry, or [`DONE`].
    head: u32,
    /// Set when the buffer ended early (cannot happen for a validated buffer).
    broken: bool,
}

impl Cursor {
    fn new(index_at: usize, bitmap: bool, value_at: usize, count: u32) -> Cursor {
        Cursor { index_at, bitmap, value_at, left: count, head: DONE, ..Cursor::default() }
    }

    /// Moves to the next entry (`head = DONE` when there is none).
    #[inline]
    fn advance(&mut self, bytes: &[u8]) {
        if self.left == 0 {
            self.head = DONE;
            return;
        }
        self.left -= 1;
        if self.bitmap {
            while self.word == 0 {
                let Some(w) = bytes.get(self.index_at..self.index_at + 4) else {
                    return self.break_off();
                };
                self.word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                self.word_base = self.next_word_base;
                self.next_word_base += 32;
                self.index_at += 4;
            }
            self.head = self.word_base + self.word.trailing_zeros();
            self.word &= self.word - 1;
        } else {
            let Some(w) = bytes.get(self.index_at..self.index_at + 2) else {
                return self.break_off();
            };
            self.head = u32::from(u16::from_le_bytes([w[0], w[1]]));
            self.index_at += 2;
        }
    }

    fn break_off(&mut self) {
        self.broken = true;
        self.left = 0;
        self.head = DONE;
    }

    /// The current entry's value, moving past it.
    #[inline]
    fn take_value(&mut self, bytes: &[u8], dtype: WireDtype) -> f32 {
        let size = dtype.size();
        let Some(v) = bytes.get(self.value_at..self.value_at + size) else {
            self.break_off();
            return 0.0;
        };
        self.value_at += size;
        let bits = if size == 4 {
            u32::from_le_bytes([v[0], v[1], v[2], v[3]])
        } else {
            u32::from(v[0]) | (u32::from(v[1]) << 8)
        };
        dequantize(bits, dtype)
    }
}

/// Applies `gathered` to `theta` and feeds back this rank's entries into the
/// committed accumulator. Buffers are expected to have passed
/// `wire::validate`; one whose header, chunk table or length is wrong (the
/// checks of [`ChunkTable::read_for`]) is still refused with
/// [`Error::InvalidPeerBuffer`] before anything is written.
pub(super) fn apply(
    state: &mut CpuState,
    theta: &mut [f32],
    gathered: &Gathered,
    own_rank: usize,
    weight: f32,
) -> Result<()> {
    let world = gathered.ranks();
    if own_rank >= world {
        return Err(CollectiveError::InvalidRank { rank: own_rank, world }.into());
    }
    let n = state.n as u64;
    let chunks = state.chunk_counts.len();
    state.cursors.resize(chunks * world, Cursor::default());
    let all = gathered.as_bytes();
    for (rank, (&start, &end)) in gathered.offsets().iter().zip(&gathered.offsets()[1..]).enumerate() {
        let bytes = all.get(start..end).unwrap_or_default();
        open_rank(&mut state.peer_table, bytes, start, n, state.dtype, rank, world, &mut state.cursors)
            .map_err(|source| Error::InvalidPeerBuffer { rank, source })?;
    }
    let sh = Shared { bytes: all, own_rank, feedback: state.error_feedback, weight, dtype: state.dtype };
    let broken = theta
        .par_chunks_mut(CHUNK_ELEMS)
        .zip(state.acc.par_chunks_mut(CHUNK_ELEMS))
        .zip(state.cursors.par_chunks_mut(world))
        .enumerate()
        .map(|(chunk, ((theta, acc), cursors))| {
            let ok = apply_chunk(sh, chunk, cursors, theta, acc);
            if !sh.feedback {
                acc.fill(0.0);
            }
            ok
        })
        .filter_map(|r| r.err())
        .min_by_key(|&(rank, _)| rank);
    state.stats.valid = false;
    match broken {
        None => Ok(()),
        Some((rank, source)) => Err(Error::InvalidPeerBuffer { rank, source }),
    }
}

/// Reads one rank's header and chunk table (`bytes`, found at `base` in
/// the gathered bytes) with the shared reader and sets up its cursor in
/// every chunk.
#[allow(clippy::too_many_arguments)]
fn open_rank(
    table: &mut ChunkTable,
    bytes: &[u8],
    base: usize,
    n: u64,
    dtype: WireDtype,
    rank: usize,
    world: usize,
    cursors: &mut [Cursor],
) -> Result<(), WireError> {
    table.read_for(bytes, n, dtype)?;
    for span in table.spans() {
        cursors[span.chunk as usize * world + rank] =
            Cursor::new(base + span.index_offset as usize, span.bitmap, base + span.value_offset as usize, span.count);
    }
    Ok(())
}

/// What every chunk of one `apply` shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    bytes: &'a [u8],
    own_rank: usize,
    feedback: bool,
    weight: f32,
    dtype: WireDtype,
}

/// Merges the ranks' entries of chunk `chunk` into `theta` (and feeds back
/// the own rank's into `acc`). On a broken buffer, returns the rank that
/// sent it and what was wrong.
fn apply_chunk(
    sh: Shared<'_>,
    chunk: usize,
    cursors: &mut [Cursor],
    theta: &mut [f32],
    acc: &mut [f32],
) -> Result<(), (usize, WireError)> {
    for cursor in cursors.iter_mut() {
        cursor.advance(sh.bytes);
    }
    // The merge fills a small batch of (index, sum) and (own index, own
    // value); the batch is then applied in a tight loop whose iterations are
    // independent, so the cache misses on `theta` and `acc` overlap.
    let mut batch = Batch::new();
    let len = theta.len().min(acc.len());
    loop {
        let i = cursors.iter().map(|c| c.head).min().unwrap_or(DONE);
        if i == DONE {
            break;
        }
        if i as usize >= len {
            let rank = cursors.iter().position(|c| c.head == i).unwrap_or(0);
            return Err((rank, WireError::IndexOutOfRange { chunk: chunk as u64, index: i, len: len as u32 }));
        }
        // Rank order, starting from +0.0 (so -0.0 + 0.0 gives +0.0, as specified).
        let mut sum = 0.0f32;
        for (rank, cursor) in cursors.iter_mut().enumerate() {
            if cursor.head == i {
                let v = cursor.take_value(sh.bytes, sh.dtype);
                sum += v;
                if sh.feedback && rank == sh.own_rank {
                    batch.own(i, v);
                }
                cursor.advance(sh.bytes);
            }
        }
        if batch.push(i, sum) {
            batch.flush(theta, acc, sh.weight);
        }
    }
    batch.flush(theta, acc, sh.weight);
    match cursors.iter().position(|c| c.broken) {
        Some(rank) => {
            let have = sh.bytes.len() as u64;
            Err((rank, WireError::Truncated { needed: have + 1, have }))
        }
        None => Ok(()),
    }
}

/// Entries merged per batch (stack arrays of a few KiB).
const BATCH: usize = 256;

/// Merged entries of one chunk waiting to be applied.
struct Batch {
    index: [u32; BATCH],
    sum: [f32; BATCH],
    own_index: [u32; BATCH],
    own_value: [f32; BATCH],
    len: usize,
    own_len: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            index: [0; BATCH],
            sum: [0.0; BATCH],
            own_index: [0; BATCH],
            own_value: [0.0; BATCH],
            len: 0,
            own_len: 0,
        }
    }

    /// Records this rank's own value at `i` (at most one per merged entry).
    #[inline]
    fn own(&mut self, i: u32, v: f32) {
        if let (Some(slot_i), Some(slot_v)) =
            (self.own_index.get_mut(self.own_len), self.own_value.get_mut(self.own_len))
        {
            (*slot_i, *slot_v) = (i, v);
            self.own_len += 1;
        }
    }

    /// Records the rank sum at `i`; true when the batch is full.
    #[inline]
    fn push(&mut self, i: u32, sum: f32) -> bool {
        if let (Some(slot_i), Some(slot_s)) = (self.index.get_mut(self.len), self.sum.get_mut(self.len)) {
            (*slot_i, *slot_s) = (i, sum);
            self.len += 1;
        }
        self.len == BATCH
    }

    /// `theta_i += weight * sum_i` (one multiply, one add: two roundings,
    /// never a fused multiply-add) and `acc_i -= own_i`. Indices were checked
    /// against the chunk length by the merge.
    fn flush(&mut self, theta: &mut [f32], acc: &mut [f32], weight: f32) {
        for (&i, &sum) in self.index[..self.len].iter().zip(&self.sum[..self.len]) {
            if let Some(t) = theta.get_mut(i as usize) {
                *t += weight * sum;
            }
        }
        for (&i, &v) in self.own_index[..self.own_len].iter().zip(&self.own_value[..self.own_len]) {
            if let Some(a) = acc.get_mut(i as usize) {
                *a -= v;
            }
        }
        self.len = 0;
        self.own_len = 0;
    }
}

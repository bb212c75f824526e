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
use crate::wire::layout::{self, CHUNK_ELEMS, FORMAT_VERSION, HEADER_BYTES, MAGIC};
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
/// `wire::validate`; a structurally broken one is still refused with
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
        open_rank(bytes, start, n, state.dtype, rank, world, &mut state.cursors)
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

/// Checks the structure of one rank's buffer (`bytes`, found at `base` in
/// the gathered bytes) and sets up its cursor in every chunk.
fn open_rank(
    bytes: &[u8],
    base: usize,
    n: u64,
    dtype: WireDtype,
    rank: usize,
    world: usize,
    cursors: &mut [Cursor],
) -> Result<(), WireError> {
    let have = bytes.len() as u64;
    let chunks = layout::num_chunks(n);
    let table_end = layout::index_base(n);
    if have < table_end {
        return Err(WireError::Truncated { needed: table_end, have });
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != MAGIC {
        return Err(WireError::BadMagic { found });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let found_dtype = WireDtype::from_code(bytes[6]).ok_or(WireError::UnknownDtype { code: bytes[6] })?;
    let found_n = u64_at(8);
    if found_n != n || found_dtype != dtype {
        return Err(WireError::Mismatch { n, dtype, found_n, found_dtype });
    }
    let count = u64_at(16);
    let mut at = table_end;
    let mut entries = 0u64;
    let table = &bytes[HEADER_BYTES..table_end as usize];
    for (c, k) in table.chunks_exact(4).enumerate() {
        let k = u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
        let len = layout::chunk_len(n, c as u64);
        if k > len {
            return Err(WireError::ChunkOverfull { chunk: c as u64, count: k, len });
        }
        cursors[c * world + rank] =
            Cursor::new(base + at as usize, layout::uses_bitmap(k, len), entries as usize * dtype.size(), k);
        at += layout::index_section_bytes(k, len);
        entries += u64::from(k);
    }
    if entries != count {
        return Err(WireError::CountMismatch { header: count, table: entries, n });
    }
    let values_at = base + at as usize;
    for c in 0..chunks as usize {
        cursors[c * world + rank].value_at += values_at;
    }
    let expected = at + layout::values_bytes(count, dtype);
    if have < expected {
        return Err(WireError::Truncated { needed: expected, have });
    }
    if have > expected {
        return Err(WireError::Oversized { expected, have });
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
    loop {
        let i = cursors.iter().map(|c| c.head).min().unwrap_or(DONE);
        if i == DONE {
            break;
        }
        let (Some(t), Some(a)) = (theta.get_mut(i as usize), acc.get_mut(i as usize)) else {
            let rank = cursors.iter().position(|c| c.head == i).unwrap_or(0);
            let len = theta.len() as u32;
            return Err((rank, WireError::IndexOutOfRange { chunk: chunk as u64, index: i, len }));
        };
        // Rank order, starting from +0.0 (so -0.0 + 0.0 gives +0.0, as specified).
        let mut sum = 0.0f32;
        for (rank, cursor) in cursors.iter_mut().enumerate() {
            if cursor.head == i {
                let v = cursor.take_value(sh.bytes, sh.dtype);
                sum += v;
                if sh.feedback && rank == sh.own_rank {
                    *a -= v;
                }
                cursor.advance(sh.bytes);
            }
        }
        // One multiply, one add: two roundings, never a fused multiply-add.
        *t += sh.weight * sum;
    }
    match cursors.iter().position(|c| c.broken) {
        Some(rank) => {
            let have = sh.bytes.len() as u64;
            Err((rank, WireError::Truncated { needed: have + 1, have }))
        }
        None => Ok(()),
    }
}

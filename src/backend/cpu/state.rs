//! One `SparseSync` instance's state on the CPU backend. Everything a step
//! touches is allocated here, once, so that steps never allocate (the apply
//! cursors grow once if a larger group than ever before shows up).

use super::apply::Cursor;
use super::cache::last_level_cache_bytes;
use super::fused::{self, BLOCK};
use super::mark::CHUNK_WORDS;
use super::tables::Tables;
use crate::config::{Selection, SyncConfig, WireDtype};
use crate::error::{BackendError, Result};
use crate::wire::ChunkTable;
use crate::wire::layout::{self, CHUNK_ELEMS};

/// Bins of the level-1 selection histogram.
pub(super) const HIST_BINS: usize = 2048;

/// The accumulator statistics the selection reads: `sum(acc^2)` as the status
/// reports it and the level-1 histogram of the keys.
#[derive(Debug, Clone)]
pub(super) struct AccStats {
    /// `sum(acc^2)`, accumulated in f64 per block, rounded to f32.
    pub acc_sq: f32,
    /// Level-1 histogram (docs/selection.md), `HIST_BINS` counters.
    pub hist1: Vec<u32>,
    /// False once the accumulator changed after these were computed.
    pub valid: bool,
}

/// Device state of the CPU backend for vectors of `n` elements.
pub struct CpuState {
    pub(super) n: usize,
    pub(super) selection: Selection,
    pub(super) dtype: WireDtype,
    pub(super) error_feedback: bool,
    /// The committed accumulator.
    pub(super) acc: Vec<f32>,
    /// Written by `accumulate`; swapped in by `commit_accumulate`.
    pub(super) spare: Vec<f32>,
    /// True while `spare` holds an uncommitted result.
    pub(super) pending: bool,
    /// Whether the fused pass writes `spare` around the cache: its working
    /// set (three inputs and the output) is larger than the last-level
    /// cache, so `acc'` would be evicted before the next step reads it.
    pub(super) stream_output: bool,
    /// Statistics of `acc`.
    pub(super) stats: AccStats,
    /// Statistics of `spare`, swapped with `stats` on commit.
    pub(super) spare_stats: AccStats,
    /// Per-block `[sum(acc'^2), sum(theta^2)]`, combined in block order.
    pub(super) block_sums: Vec<[f64; 2]>,
    /// Per-block non-finite counts.
    pub(super) block_bad: Vec<u32>,
    /// Per-thread histogram tables of the parallel passes.
    pub(super) tables: Tables,
    /// Histogram of the current cut-search level (levels 2 and 3).
    pub(super) level_hist: Vec<u32>,
    /// Per wire chunk: entries selected.
    pub(super) chunk_counts: Vec<u32>,
    /// Per wire chunk: candidates set aside by the selection pass; once the
    /// cut search is done, the candidates it took (see `cand_bits`).
    pub(super) cand_counts: Vec<u32>,
    /// Per wire chunk: candidates equal to the exact cut, then the ones taken.
    pub(super) chunk_ties: Vec<u32>,
    /// Selection bitmap, `CHUNK_ELEMS / 32` words per chunk.
    pub(super) sel: Vec<u32>,
    /// Raw f32 bits of the candidates (their key is `bits & KEY_MASK`; the
    /// packer needs the signed value), chunk `c`'s from index
    /// `CHUNK_ELEMS * c`, in index order; once the cut search is done, only
    /// the ones it took, still in index order. Top-k rules only; its pages
    /// are only touched as far as candidates are found.
    pub(super) cand_bits: Vec<u32>,
    /// Chunk-local indices of the candidates, laid out like `cand_bits`.
    pub(super) cand_index: Vec<u16>,
    /// Raw f32 bits of the entries the selection pass marked at or above the
    /// cut, laid out like `cand_bits`, in index order: captured while the
    /// pass has them in cache, so that the packer never reads the (evicted)
    /// accumulator at scattered positions. Every rule but `Dense` (which
    /// packs the accumulator as it is); pages touched only as far as used.
    pub(super) marked_bits: Vec<u32>,
    /// Chunk-local indices of the entries in `marked_bits`, laid out alike
    /// (so that a list chunk's index section is a merge of two short lists,
    /// not a scan of its bitmap).
    pub(super) marked_index: Vec<u16>,
    /// Byte offset of each chunk's index section, plus the values offset.
    pub(super) index_offsets: Vec<u64>,
    /// Entries before each chunk.
    pub(super) entry_offsets: Vec<u64>,
    /// Staging buffer, sized for the largest possible packed buffer (its pages
    /// are zero-filled lazily by the OS, so the unused tail costs nothing).
    pub(super) packed: Vec<u8>,
    /// Merge cursors for `apply`: one per (chunk, rank), chunk-major. Grows
    /// (once) to the largest group seen.
    pub(super) cursors: Vec<Cursor>,
    /// The peers' headers and chunk tables, read one rank at a time by
    /// `apply` (sized for `n` here, so reading allocates nothing).
    pub(super) peer_table: ChunkTable,
}

impl std::fmt::Debug for CpuState {
    /// The shape of the state, not its (large) buffers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuState")
            .field("n", &self.n)
            .field("selection", &self.selection)
            .field("dtype", &self.dtype)
            .field("error_feedback", &self.error_feedback)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl AccStats {
    /// The statistics of an all-zero accumulator of `n` elements.
    fn zero(n: usize) -> AccStats {
        let mut hist1 = vec![0u32; HIST_BINS];
        hist1[0] = n as u32;
        AccStats { acc_sq: 0.0, hist1, valid: true }
    }
}

impl CpuState {
    /// Allocates the state for `n` elements under `config` (validated by the
    /// caller). `threads` only sets the number of histogram table sets.
    pub(super) fn new(n: usize, config: &SyncConfig, threads: usize) -> Result<CpuState> {
        if n == 0 || n as u64 >= u32::MAX as u64 {
            return Err(BackendError::Unsupported {
                backend: "cpu",
                what: format!("vectors of {n} elements (supported: 1 ..= {})", u32::MAX - 1),
            }
            .into());
        }
        let blocks = n.div_ceil(BLOCK);
        let chunks = n.div_ceil(CHUNK_ELEMS);
        let dense = matches!(config.selection, Selection::Dense);
        let top_k = matches!(config.selection, Selection::TopK { .. } | Selection::TopKApprox { .. });
        Ok(CpuState {
            n,
            selection: config.selection,
            dtype: config.wire_dtype,
            error_feedback: config.error_feedback,
            acc: zeroed(0.0, n)?,
            spare: zeroed(0.0, n)?,
            pending: false,
            stream_output: 16 * n > last_level_cache_bytes(),
            stats: AccStats::zero(n),
            spare_stats: AccStats::zero(n),
            block_sums: zeroed([0.0; 2], blocks)?,
            block_bad: zeroed(0, blocks)?,
            tables: Tables::new(threads),
            level_hist: zeroed(0, HIST_BINS)?,
            chunk_counts: zeroed(0, chunks)?,
            cand_counts: zeroed(0, chunks)?,
            chunk_ties: zeroed(0, chunks)?,
            sel: zeroed(0, chunks * CHUNK_WORDS)?,
            cand_bits: zeroed(0, if top_k { n } else { 0 })?,
            cand_index: zeroed(0, if top_k { n } else { 0 })?,
            marked_bits: zeroed(0, if dense { 0 } else { n })?,
            marked_index: zeroed(0, if dense { 0 } else { n })?,
            index_offsets: zeroed(0, chunks + 1)?,
            entry_offsets: zeroed(0, chunks)?,
            packed: zeroed(0, max_packed_bytes(n as u64, config.wire_dtype))?,
            cursors: Vec::new(),
            peer_table: ChunkTable::for_len(n as u64),
        })
    }

    /// `commit_accumulate`: the spare accumulator becomes the committed one
    /// (a swap, no copy). Without a pending result this does nothing.
    pub(super) fn commit(&mut self) {
        if self.pending {
            std::mem::swap(&mut self.acc, &mut self.spare);
            std::mem::swap(&mut self.stats, &mut self.spare_stats);
            self.pending = false;
        }
    }

    /// Makes sure `stats` describes `acc` (it does not after `apply`).
    pub(super) fn refresh_stats(&mut self) {
        if !self.stats.valid {
            fused::acc_stats(self);
        }
    }
}

/// A vector of `len` copies of `value`, or [`BackendError::OutOfMemory`] when
/// it cannot be allocated (instead of an abort).
pub(super) fn zeroed<T: Clone>(value: T, len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    if v.try_reserve_exact(len).is_err() {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        return Err(BackendError::OutOfMemory { backend: "cpu", bytes }.into());
    }
    v.resize(len, value);
    Ok(v)
}

/// The largest packed buffer `n` elements can produce: every value sent,
/// every chunk a bitmap ([`layout::max_packed_bytes`] for `n` entries).
fn max_packed_bytes(n: u64, dtype: WireDtype) -> usize {
    layout::max_packed_bytes(n, dtype, n) as usize
}

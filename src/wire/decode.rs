//! The decoder: full validation of an untrusted packed buffer, in one pass
//! over its bytes, into a zero-copy view with O(1) access to every chunk.
//!
//! Order of checks: the header, the chunk table and the exact total length,
//! by the one reader of those ([`ChunkTable`], wire/table.rs, which every
//! backend's `apply` uses too), then each section's structure and the
//! checksum while the bytes are read once.

use super::checksum::word_term;
use super::encode::PackedDelta;
use super::layout::{self, CHECKSUM_OFFSET, CHUNK_ELEMS, Layout};
use super::quantize;
use super::table::{ChunkTable, u16_at, u32_at};
use crate::config::WireDtype;
use crate::error::WireError;

/// Bytes of the values section checksummed and validated together, so each
/// block is read from memory once and re-read from L1.
const VALUE_BLOCK_BYTES: usize = 16 * 1024;

/// Fully validates `bytes` (as [`PackedView::parse`]) and checks that it is
/// for `n` elements of `dtype`, else [`WireError::Mismatch`].
pub fn validate(bytes: &[u8], n: u64, dtype: WireDtype) -> Result<(), WireError> {
    PackedView::parse_for(bytes, n, dtype).map(|_| ())
}

/// Reusable validation: [`validate`] without a per-call allocation once the
/// scratch has held a layout with as many chunks (what a per-step caller such
/// as [`crate::SparseSync`] needs).
#[derive(Debug, Default)]
pub struct Validator {
    table: ChunkTable,
}

impl Validator {
    /// A validator whose scratch already fits buffers for `n` elements
    /// (best effort: when that much cannot be allocated, the scratch starts
    /// empty and grows on use; never a panic or an abort).
    pub fn for_len(n: u64) -> Self {
        Validator { table: ChunkTable::for_len(n) }
    }

    /// The length of the packed buffer that starts `bytes` (which may hold
    /// more after it), from its header and chunk table alone; errors as
    /// [`PackedView::parse`] for those parts. The length can exceed
    /// `bytes.len()`: the caller compares. Used to split the concatenated
    /// buffers of a grouped exchange before validating each one.
    pub fn leading_len(&mut self, bytes: &[u8]) -> Result<u64, WireError> {
        self.table.read_prefix(bytes)
    }

    /// Same checks and errors as [`validate`].
    pub fn validate(&mut self, bytes: &[u8], n: u64, dtype: WireDtype) -> Result<(), WireError> {
        self.table.read(bytes)?;
        check_body(bytes, self.table.layout())?;
        let (found_n, found_dtype) = (self.table.layout().n, self.table.layout().dtype);
        if found_n != n || found_dtype != dtype {
            return Err(WireError::Mismatch { n, dtype, found_n, found_dtype });
        }
        Ok(())
    }
}

/// Fully validates `bytes` and copies its entries out.
pub fn decode(bytes: &[u8]) -> Result<PackedDelta, WireError> {
    Ok(PackedView::parse(bytes)?.to_delta())
}

/// Wrapping sum of [`word_term`] over `bytes` (a multiple of 4 long), whose
/// first word sits at word position `first` of the buffer. Word positions
/// wrap modulo 2^32 exactly as in `checksum::checksum`.
fn term_sum(bytes: &[u8], first: usize) -> u32 {
    let mut sum = 0u32;
    let mut i = first as u32;
    for w in bytes.chunks_exact(4) {
        sum = sum.wrapping_add(word_term(i, u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
        i = i.wrapping_add(1);
    }
    sum
}

/// The exponent field of `dtype`'s wire bits: a value is non-finite exactly
/// when all of these bits are set.
fn exponent_mask(dtype: WireDtype) -> u32 {
    match dtype {
        WireDtype::F32 => 0x7f80_0000,
        WireDtype::F16 => 0x7c00,
        WireDtype::Bf16 => 0x7f80,
    }
}

/// A fully validated, zero-copy view of a packed buffer.
///
/// [`PackedView::parse`] checks everything docs/wire-format.md lists under
/// "Decoder obligations" (and computes the checksum) in one pass; after that
/// every accessor is infallible. Parsing allocates only the [`Layout`]
/// (two `u64` per chunk), whose size is checked against the buffer first.
#[derive(Debug, Clone)]
pub struct PackedView<'a> {
    bytes: &'a [u8],
    layout: Layout,
}

impl<'a> PackedView<'a> {
    /// Validates an untrusted buffer. Errors: [`WireError::Truncated`] /
    /// [`WireError::Oversized`] unless the length is exactly what the header
    /// and chunk table imply; [`WireError::BadMagic`],
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownDtype`];
    /// [`WireError::NonZeroReserved`] for reserved header bytes, list
    /// padding, bitmap bits past the chunk and values padding;
    /// [`WireError::ChunkOverfull`], [`WireError::CountMismatch`];
    /// [`WireError::Misordered`], [`WireError::IndexOutOfRange`],
    /// [`WireError::BitmapCount`]; [`WireError::NonFiniteValue`]; and
    /// [`WireError::ChecksumMismatch`], checked last.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut table = ChunkTable::new();
        table.read(bytes)?;
        let layout = table.into_layout();
        check_body(bytes, &layout)?;
        Ok(PackedView { bytes, layout })
    }

    /// [`PackedView::parse`], then [`WireError::Mismatch`] unless the buffer
    /// is for `n` elements of `dtype`.
    pub fn parse_for(bytes: &'a [u8], n: u64, dtype: WireDtype) -> Result<Self, WireError> {
        let view = Self::parse(bytes)?;
        if view.n() != n || view.dtype() != dtype {
            return Err(WireError::Mismatch { n, dtype, found_n: view.n(), found_dtype: view.dtype() });
        }
        Ok(view)
    }

    /// The whole buffer.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Dense length.
    pub fn n(&self) -> u64 {
        self.layout.n
    }

    /// Value dtype.
    pub fn dtype(&self) -> WireDtype {
        self.layout.dtype
    }

    /// Number of entries.
    pub fn count(&self) -> u64 {
        self.layout.count
    }

    /// The checksum stored in (and verified against) the header.
    pub fn checksum(&self) -> u32 {
        u32_at(self.bytes, CHECKSUM_OFFSET)
    }

    /// Where every section sits (validated).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Gives up the view, returning its layout (to reuse its allocations).
    pub fn into_layout(self) -> Layout {
        self.layout
    }

    /// Number of chunks, `ceil(n / 65536)`, including those with no entries.
    pub fn num_chunks(&self) -> usize {
        self.layout.entry_offsets.len()
    }

    /// Chunk `c` in O(1), or `None` when `c >= num_chunks()`. Chunks cover
    /// disjoint index ranges, so they may be applied in parallel.
    pub fn chunk(&self, c: usize) -> Option<ChunkView<'a>> {
        (c < self.num_chunks()).then(|| self.chunk_unchecked(c))
    }

    /// Every chunk in order, empty ones included.
    pub fn chunks(&self) -> impl ExactSizeIterator<Item = ChunkView<'a>> + DoubleEndedIterator + '_ {
        (0..self.num_chunks()).map(move |c| self.chunk_unchecked(c))
    }

    /// Every entry as `(global index, value)`, in increasing index order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, f32)> + '_ {
        self.chunks().flat_map(|c| c.iter())
    }

    /// Copies the entries into an owned [`PackedDelta`] (allocations sized by
    /// the validated count, which the buffer length bounds).
    pub fn to_delta(&self) -> PackedDelta {
        let mut out = PackedDelta::empty(self.n(), self.dtype());
        self.to_delta_into(&mut out);
        out
    }

    /// [`PackedView::to_delta`] into `out`, reusing its vectors' capacity.
    pub fn to_delta_into(&self, out: &mut PackedDelta) {
        let count = self.count() as usize;
        out.n = self.n();
        out.dtype = self.dtype();
        let PackedDelta { indices, values, .. } = out;
        indices.clear();
        values.clear();
        indices.reserve(count);
        values.reserve(count);
        // Dispatch on the index kind and dtype once per chunk, not per entry.
        for chunk in self.chunks().filter(|c| c.count() > 0) {
            let base = chunk.base();
            match chunk.entries() {
                ChunkIndex::List(list) => {
                    indices.extend(list.chunks_exact(2).map(|b| base + u64::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                ChunkIndex::Bitmap(words) => {
                    for (w, word) in words.chunks_exact(4).enumerate() {
                        let mut bits = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                        let word_base = base + 32 * w as u64;
                        while bits != 0 {
                            indices.push(word_base + u64::from(bits.trailing_zeros()));
                            bits &= bits - 1;
                        }
                    }
                }
            }
            let raw = chunk.value_bytes();
            match self.dtype() {
                WireDtype::F32 => values
                    .extend(raw.chunks_exact(4).map(|b| f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
                WireDtype::F16 => values.extend(
                    raw.chunks_exact(2)
                        .map(|b| quantize::dequantize(u32::from(u16::from_le_bytes([b[0], b[1]])), WireDtype::F16)),
                ),
                WireDtype::Bf16 => values.extend(
                    raw.chunks_exact(2)
                        .map(|b| quantize::dequantize(u32::from(u16::from_le_bytes([b[0], b[1]])), WireDtype::Bf16)),
                ),
            }
        }
    }

    /// `c < num_chunks()` is the caller's promise (checked by slicing).
    fn chunk_unchecked(&self, c: usize) -> ChunkView<'a> {
        chunk_at(self.bytes, &self.layout, c)
    }
}

/// Structure of every index section and the values, and the checksum.
/// Lengths were checked by [`ChunkTable::read`], so every slice here is in
/// bounds.
fn check_body(b: &[u8], lay: &Layout) -> Result<(), WireError> {
    let skip = CHECKSUM_OFFSET / 4;
    let table_end = lay.index_offsets[0] as usize;
    let mut sum =
        term_sum(&b[..CHECKSUM_OFFSET], 0).wrapping_add(term_sum(&b[CHECKSUM_OFFSET + 4..table_end], skip + 1));
    for c in 0..lay.entry_offsets.len() {
        let chunk = chunk_at(b, lay, c);
        let start = lay.index_offsets[c] as usize;
        let end = lay.index_offsets[c + 1] as usize;
        sum = sum.wrapping_add(term_sum(&b[start..end], start / 4));
        match chunk.entries {
            ChunkIndex::List(list) => check_list(&chunk, list, &b[start + list.len()..end], start + list.len())?,
            ChunkIndex::Bitmap(words) => check_bitmap(&chunk, words, start)?,
        }
    }
    let values_at = lay.values_offset() as usize;
    let values = &b[values_at..];
    let dtype = lay.dtype;
    let payload = lay.count as usize * dtype.size();
    for (blk, block) in values.chunks(VALUE_BLOCK_BYTES).enumerate() {
        let block_at = blk * VALUE_BLOCK_BYTES;
        sum = sum.wrapping_add(term_sum(block, (values_at + block_at) / 4));
        let used = payload.saturating_sub(block_at).min(block.len());
        if let Some(j) = first_non_finite(&block[..used], dtype) {
            return Err(WireError::NonFiniteValue { position: ((block_at + j * dtype.size()) / dtype.size()) as u64 });
        }
        if let Some(p) = block[used..].iter().position(|&x| x != 0) {
            return Err(WireError::NonZeroReserved { offset: (values_at + block_at + used + p) as u64 });
        }
    }
    let expected = u32_at(b, CHECKSUM_OFFSET);
    if sum != expected {
        return Err(WireError::ChecksumMismatch { expected, actual: sum });
    }
    Ok(())
}

/// Chunk `c` of a buffer laid out by `lay`; `c < num_chunks` is the
/// caller's promise (checked by slicing).
fn chunk_at<'a>(bytes: &'a [u8], lay: &Layout, c: usize) -> ChunkView<'a> {
    let n = lay.n;
    let len = layout::chunk_len(n, c as u64);
    let first_entry = lay.entry_offsets[c];
    let next_entry = lay.entry_offsets.get(c + 1).copied().unwrap_or(lay.count);
    let count = (next_entry - first_entry) as u32;
    let start = lay.index_offsets[c] as usize;
    let end = lay.index_offsets[c + 1] as usize;
    let section = &bytes[start..end];
    let entries = if layout::uses_bitmap(count, len) {
        ChunkIndex::Bitmap(section)
    } else {
        ChunkIndex::List(&section[..2 * count as usize])
    };
    let size = lay.dtype.size();
    let v0 = lay.values_offset() as usize + first_entry as usize * size;
    ChunkView {
        chunk: c as u64,
        len,
        count,
        first_entry,
        dtype: lay.dtype,
        entries,
        values: &bytes[v0..v0 + count as usize * size],
    }
}

/// Index of the first non-finite value in `values` (whole values of `dtype`).
fn first_non_finite(values: &[u8], dtype: WireDtype) -> Option<usize> {
    let mask = exponent_mask(dtype);
    let bad = |bits: u32| bits & mask == mask;
    let f32_bits = |v: &[u8]| u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    let half_bits = |v: &[u8]| u32::from(u16::from_le_bytes([v[0], v[1]]));
    // Branch-free OR over the block first (it vectorises); the position is
    // only searched for when a bad value is present.
    let any = match dtype.size() {
        4 => values.chunks_exact(4).fold(false, |a, v| a | bad(f32_bits(v))),
        _ => values.chunks_exact(2).fold(false, |a, v| a | bad(half_bits(v))),
    };
    if !any {
        return None;
    }
    match dtype.size() {
        4 => values.chunks_exact(4).position(|v| bad(f32_bits(v))),
        _ => values.chunks_exact(2).position(|v| bad(half_bits(v))),
    }
}

/// A list chunk: strictly increasing local indices below the chunk length,
/// and a zero pad (`pad` is empty or the two bytes after an odd list, found
/// at byte `pad_at` of the buffer).
fn check_list(chunk: &ChunkView<'_>, list: &[u8], pad: &[u8], pad_at: usize) -> Result<(), WireError> {
    let mut prev: Option<u16> = None;
    for (p, raw) in list.chunks_exact(2).enumerate() {
        let index = u16::from_le_bytes([raw[0], raw[1]]);
        if prev.is_some_and(|q| index <= q) {
            return Err(WireError::Misordered { chunk: chunk.chunk, position: p as u32 });
        }
        if u32::from(index) >= chunk.len {
            return Err(WireError::IndexOutOfRange { chunk: chunk.chunk, index: u32::from(index), len: chunk.len });
        }
        prev = Some(index);
    }
    if let Some(p) = pad.iter().position(|&x| x != 0) {
        return Err(WireError::NonZeroReserved { offset: (pad_at + p) as u64 });
    }
    Ok(())
}

/// A bitmap chunk: no bits at or past the chunk length, and the population
/// count equal to the table's. The bitmap starts at byte `start` of the buffer.
fn check_bitmap(chunk: &ChunkView<'_>, words: &[u8], start: usize) -> Result<(), WireError> {
    let mut bits = 0u32;
    for w in words.chunks_exact(4) {
        bits += u32::from_le_bytes([w[0], w[1], w[2], w[3]]).count_ones();
    }
    let tail = chunk.len % 32;
    if tail != 0 {
        let last = words.len() - 4;
        let stray = u32_at(words, last) >> tail;
        if stray != 0 {
            // The byte holding the lowest stray bit.
            let bit = tail + stray.trailing_zeros();
            return Err(WireError::NonZeroReserved { offset: (start + last) as u64 + u64::from(bit / 8) });
        }
    }
    if bits != chunk.count {
        return Err(WireError::BitmapCount { chunk: chunk.chunk, bits, count: chunk.count });
    }
    Ok(())
}

/// How one chunk's entries are stored (validated raw bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkIndex<'a> {
    /// `count` strictly increasing `u16` local indices (padding excluded).
    List(&'a [u8]),
    /// `ceil(len / 32)` `u32` words; bit `j` of word `w` marks local index
    /// `32 * w + j`.
    Bitmap(&'a [u8]),
}

impl<'a> ChunkIndex<'a> {
    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            ChunkIndex::List(b) | ChunkIndex::Bitmap(b) => b,
        }
    }
}

/// One validated chunk of a [`PackedView`]: the entries whose indices lie in
/// `base() .. base() + len()`.
#[derive(Debug, Clone, Copy)]
pub struct ChunkView<'a> {
    chunk: u64,
    len: u32,
    count: u32,
    first_entry: u64,
    dtype: WireDtype,
    entries: ChunkIndex<'a>,
    values: &'a [u8],
}

impl<'a> ChunkView<'a> {
    /// Chunk number `c`.
    pub fn number(&self) -> u64 {
        self.chunk
    }

    /// Global index of local index 0: `65536 * c`.
    pub fn base(&self) -> u64 {
        self.chunk * CHUNK_ELEMS as u64
    }

    /// Elements the chunk spans (65536, or fewer for the last chunk).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the chunk spans no elements (never true for a parsed chunk).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries in the chunk.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Position of the chunk's first entry among all entries of the buffer.
    pub fn first_entry(&self) -> u64 {
        self.first_entry
    }

    /// Value dtype.
    pub fn dtype(&self) -> WireDtype {
        self.dtype
    }

    /// The chunk's index section (list or bitmap).
    pub fn entries(&self) -> ChunkIndex<'a> {
        self.entries
    }

    /// The chunk's values: `count() * dtype().size()` bytes, no padding.
    pub fn value_bytes(&self) -> &'a [u8] {
        self.values
    }

    /// The wire bits of value `j` (low 16 bits for f16/bf16).
    ///
    /// # Panics
    /// If `j >= count()`.
    pub fn value_bits(&self, j: usize) -> u32 {
        match self.dtype {
            WireDtype::F32 => u32_at(self.values, 4 * j),
            WireDtype::F16 | WireDtype::Bf16 => u32::from(u16_at(self.values, 2 * j)),
        }
    }

    /// Value `j` (of the chunk's entries, in index order) as `f32`.
    ///
    /// # Panics
    /// If `j >= count()`.
    pub fn value(&self, j: usize) -> f32 {
        quantize::dequantize(self.value_bits(j), self.dtype)
    }

    /// The values in index order, as `f32`.
    pub fn values(&self) -> impl ExactSizeIterator<Item = f32> + use<'a> {
        let dtype = self.dtype;
        self.values.chunks_exact(dtype.size()).map(move |v| {
            let bits = match dtype {
                WireDtype::F32 => u32::from_le_bytes([v[0], v[1], v[2], v[3]]),
                WireDtype::F16 | WireDtype::Bf16 => u32::from(u16::from_le_bytes([v[0], v[1]])),
            };
            quantize::dequantize(bits, dtype)
        })
    }

    /// The local indices (`0 .. len()`) in increasing order.
    pub fn local_indices(&self) -> LocalIndices<'a> {
        match self.entries {
            ChunkIndex::List(b) => LocalIndices { inner: Inner::List(b.chunks_exact(2)) },
            ChunkIndex::Bitmap(b) => {
                LocalIndices { inner: Inner::Bitmap { words: b.chunks_exact(4), word: 0, base: 0, left: self.count } }
            }
        }
    }

    /// `(global index, value)` for every entry, in increasing index order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, f32)> + use<'a> {
        let base = self.base();
        self.local_indices().map(move |l| base + u64::from(l)).zip(self.values())
    }
}

/// Iterator over a chunk's local indices; see [`ChunkView::local_indices`].
#[derive(Debug, Clone)]
pub struct LocalIndices<'a> {
    inner: Inner<'a>,
}

#[derive(Debug, Clone)]
enum Inner<'a> {
    List(std::slice::ChunksExact<'a, u8>),
    /// `word` holds the not yet yielded bits of the word at local bit `base - 32`.
    Bitmap {
        words: std::slice::ChunksExact<'a, u8>,
        word: u32,
        base: u32,
        left: u32,
    },
}

impl Iterator for LocalIndices<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match &mut self.inner {
            Inner::List(it) => it.next().map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))),
            Inner::Bitmap { words, word, base, left } => {
                while *word == 0 {
                    let w = words.next()?;
                    *word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    *base += 32;
                }
                let j = word.trailing_zeros();
                *word &= *word - 1;
                *left -= 1;
                Some(*base - 32 + j)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            Inner::List(it) => it.len(),
            Inner::Bitmap { left, .. } => *left as usize,
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for LocalIndices<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::checksum;
    use crate::wire::peek_count;

    fn sample(dtype: WireDtype) -> PackedDelta {
        // chunk 0: bitmap (5000 entries), chunk 1: empty, chunk 2: odd list, chunk 3: short last chunk.
        let n = 3 * CHUNK_ELEMS as u64 + 100;
        let mut indices: Vec<u64> = (0..5000).map(|i| 13 * i).collect();
        indices.extend([
            2 * CHUNK_ELEMS as u64 + 1,
            2 * CHUNK_ELEMS as u64 + 7,
            2 * CHUNK_ELEMS as u64 + 65_535,
            3 * CHUNK_ELEMS as u64 + 99,
        ]);
        let values = (0..indices.len()).map(|i| i as f32 * 0.25 - 300.0).collect();
        PackedDelta::new(n, dtype, indices, values).unwrap()
    }

    /// Rewrites the checksum so a corruption is judged on its structure.
    fn reseal(b: &mut [u8]) {
        let sum = checksum(b).unwrap();
        b[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn view_exposes_layout_chunks_and_entries() {
        for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Bf16] {
            let d = sample(dtype);
            let bytes = d.encode().unwrap();
            let v = PackedView::parse(&bytes).unwrap();
            assert_eq!((v.n(), v.dtype(), v.count()), (d.n, dtype, d.count()));
            assert_eq!(*v.layout(), d.layout());
            assert_eq!(v.num_chunks(), 4);
            let counts: Vec<u32> = v.chunks().map(|c| c.count()).collect();
            assert_eq!(counts, vec![5000, 0, 3, 1]);
            let c0 = v.chunk(0).unwrap();
            assert!(matches!(c0.entries(), ChunkIndex::Bitmap(b) if b.len() == 8192));
            let c2 = v.chunk(2).unwrap();
            assert!(matches!(c2.entries(), ChunkIndex::List(b) if b.len() == 6));
            assert_eq!((c2.base(), c2.first_entry(), c2.len()), (2 * 65_536, 5000, 65_536));
            assert_eq!(c2.local_indices().collect::<Vec<_>>(), vec![1, 7, 65_535]);
            assert_eq!(c2.value(2), d.values[5002]);
            assert_eq!(v.chunk(3).unwrap().len(), 100);
            assert!(v.chunk(4).is_none());
            let (idx, val): (Vec<u64>, Vec<f32>) = v.iter().unzip();
            assert_eq!(idx, d.indices);
            assert_eq!(val, d.values);
            assert_eq!(c0.local_indices().len(), 5000);
            assert_eq!(v.to_delta(), d);
            assert_eq!(peek_count(&bytes), Ok(d.count()));
            assert_eq!(validate(&bytes, d.n, dtype), Ok(()));
        }
    }

    #[test]
    fn validate_reports_mismatch() {
        let bytes = sample(WireDtype::Bf16).encode().unwrap();
        let n = 3 * CHUNK_ELEMS as u64 + 100;
        assert_eq!(
            validate(&bytes, n, WireDtype::F16),
            Err(WireError::Mismatch { n, dtype: WireDtype::F16, found_n: n, found_dtype: WireDtype::Bf16 })
        );
        assert!(matches!(validate(&bytes, n + 1, WireDtype::Bf16), Err(WireError::Mismatch { .. })));
    }

    #[test]
    fn huge_n_in_tiny_buffer_is_truncated_without_allocating() {
        let mut b = PackedDelta::empty(1, WireDtype::F32).encode().unwrap();
        for n in [u64::MAX, u64::MAX - 65_535, 1 << 62] {
            b[8..16].copy_from_slice(&n.to_le_bytes());
            reseal(&mut b);
            assert_eq!(
                PackedView::parse(&b).unwrap_err(),
                WireError::Truncated { needed: layout::index_base(n), have: b.len() as u64 }
            );
        }
    }

    #[test]
    fn huge_count_is_a_count_mismatch() {
        let mut b = PackedDelta::empty(10, WireDtype::F32).encode().unwrap();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut b);
        assert_eq!(PackedView::parse(&b).unwrap_err(), WireError::CountMismatch { header: u64::MAX, table: 0, n: 10 });
        assert_eq!(peek_count(&b), Ok(u64::MAX));
    }

    #[test]
    fn stray_bitmap_bit_is_reported_at_its_byte() {
        let n = 100u64;
        let d = PackedDelta::new(n, WireDtype::F32, (0..40).collect(), vec![1.0; 40]).unwrap();
        let mut b = d.encode().unwrap();
        let start = d.layout().index_offsets[0] as usize;
        // Word 3 holds bits 96..128; 100 % 32 = 4, so bit 4 of that word is the first stray bit.
        b[start + 12] |= 1 << 5;
        reseal(&mut b);
        assert_eq!(PackedView::parse(&b).unwrap_err(), WireError::NonZeroReserved { offset: (start + 12) as u64 });
    }

    #[test]
    fn peek_count_checks_only_the_header_prefix() {
        assert_eq!(peek_count(b"CSPD"), Err(WireError::Truncated { needed: 32, have: 4 }));
        let mut b = PackedDelta::empty(0, WireDtype::F32).encode().unwrap();
        assert_eq!(b.len(), 32);
        b[16] = 7;
        assert_eq!(peek_count(&b), Ok(7));
        b[0] = b'X';
        assert_eq!(peek_count(&b), Err(WireError::BadMagic { found: *b"XSPD" }));
    }

    /// A scratch for an absurd length is best effort, never an abort, and
    /// still validates.
    #[test]
    fn validator_for_an_unallocatable_length_still_works() {
        let mut v = Validator::for_len(u64::MAX);
        let d = PackedDelta::new(10, WireDtype::F32, vec![1, 2], vec![1.0, 2.0]).unwrap();
        assert_eq!(v.validate(&d.encode().unwrap(), 10, WireDtype::F32), Ok(()));
    }
}

//! The encoder: an owned, validated sparse delta and the one canonical byte
//! sequence docs/wire-format.md assigns to it.

use super::checksum::checksum;
use super::layout::{self, CHECKSUM_OFFSET, CHUNK_ELEMS, FORMAT_VERSION, HEADER_BYTES, Layout, MAGIC};
use super::quantize;
use crate::config::WireDtype;
use crate::error::WireError;

/// Bits that turn a global index into its chunk number.
const CHUNK_SHIFT: u32 = CHUNK_ELEMS.trailing_zeros();
/// Mask that turns a global index into its chunk-local index.
const LOCAL_MASK: u64 = CHUNK_ELEMS as u64 - 1;

/// An owned sparse delta: strictly increasing indices below `n` and their
/// finite values, each exactly representable in `dtype`.
///
/// Build it with [`PackedDelta::new`], which checks and establishes those
/// invariants; the fields are public for reading. A value built by hand that
/// breaks them is reported by [`PackedDelta::check`], and
/// [`PackedDelta::encode`] returns that same error instead of a buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedDelta {
    /// Dense length.
    pub n: u64,
    /// Wire dtype.
    pub dtype: WireDtype,
    /// Strictly increasing indices, each `< n`.
    pub indices: Vec<u64>,
    /// Values (finite, already representable in `dtype`), one per index.
    pub values: Vec<f32>,
}

impl PackedDelta {
    /// Checks the entries and rounds every value to `dtype` with
    /// [`quantize::round_trip`], so the result holds exactly what a receiver
    /// will decode.
    ///
    /// Errors: [`WireError::EntryLengths`] when the vectors differ in length,
    /// [`WireError::Misordered`] when indices are not strictly increasing,
    /// [`WireError::IndexPastEnd`] for an index `>= n`,
    /// [`WireError::NonFiniteValue`] for NaN or infinity (checked before
    /// rounding; finite values too large for `dtype` saturate).
    pub fn new(n: u64, dtype: WireDtype, indices: Vec<u64>, mut values: Vec<f32>) -> Result<Self, WireError> {
        check_entries(n, &indices, &values)?;
        for v in &mut values {
            *v = quantize::round_trip(*v, dtype);
        }
        Ok(PackedDelta { n, dtype, indices, values })
    }

    /// A delta with no entries.
    pub fn empty(n: u64, dtype: WireDtype) -> Self {
        PackedDelta { n, dtype, indices: Vec::new(), values: Vec::new() }
    }

    /// Checks the invariants [`PackedDelta::new`] establishes, including that
    /// every value is already representable in `dtype`. Errors as in `new`,
    /// plus [`WireError::NotRepresentable`] for a value `dtype` would round.
    pub fn check(&self) -> Result<(), WireError> {
        check_entries(self.n, &self.indices, &self.values)?;
        for (p, &v) in self.values.iter().enumerate() {
            if quantize::round_trip(v, self.dtype).to_bits() != v.to_bits() {
                return Err(WireError::NotRepresentable { position: p as u64 });
            }
        }
        Ok(())
    }

    /// Number of entries.
    pub fn count(&self) -> u64 {
        self.indices.len() as u64
    }

    /// Entries per chunk (`num_chunks(n)` of them), as the chunk table holds.
    /// For a delta that fails [`PackedDelta::check`] the counts are
    /// meaningless (entries past the last chunk are not counted) but this
    /// never panics.
    pub fn chunk_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; layout::num_chunks(self.n) as usize];
        for g in chunk_groups(&self.indices) {
            if let Some(slot) = usize::try_from(g.chunk).ok().and_then(|c| counts.get_mut(c)) {
                *slot = (g.end - g.start) as u32;
            }
        }
        counts
    }

    /// Where every section of this delta's buffer sits.
    pub fn layout(&self) -> Layout {
        Layout::new(self.n, self.dtype, &self.chunk_counts())
    }

    /// Length in bytes of [`PackedDelta::encode`]'s result, computed without
    /// allocating (meaningless, but no panic, for a delta that fails
    /// [`PackedDelta::check`]).
    pub fn encoded_len(&self) -> u64 {
        let mut at = layout::index_base(self.n);
        for g in chunk_groups(&self.indices) {
            let len = layout::chunk_len(self.n, g.chunk);
            at = at.saturating_add(layout::index_section_bytes((g.end - g.start) as u32, len));
        }
        at.saturating_add(layout::values_bytes(self.count(), self.dtype))
    }

    /// The canonical packed buffer (docs/wire-format.md).
    ///
    /// Errors: the invariants of [`PackedDelta::new`] broken through the
    /// public fields are reported as [`PackedDelta::check`] reports them
    /// (the same error), and a buffer that cannot be allocated is
    /// [`WireError::TooLarge`] (the chunk table alone takes `n / 16384`
    /// bytes). Never a panic, in any build profile.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Writes the canonical packed buffer into `out`, replacing its contents
    /// and reusing its capacity. Errors as [`PackedDelta::encode`], with
    /// `out` left empty.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.clear();
        // Order, lengths, range and finiteness up front (the layout below
        // relies on them); representability while the values are written.
        check_entries(self.n, &self.indices, &self.values)?;
        let result = self.write(out);
        if result.is_err() {
            out.clear();
        }
        result
    }

    /// The body of [`PackedDelta::encode_into`] for entries that passed
    /// `check_entries`: `out` is empty.
    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let n = self.n;
        let bytes = self.encoded_len();
        let total = usize::try_from(bytes).map_err(|_| WireError::TooLarge { n, bytes })?;
        out.try_reserve_exact(total).map_err(|_| WireError::TooLarge { n, bytes })?;
        // Zero-filled: bitmaps are built by OR-ing bits in, and every padding
        // byte the format requires is zero.
        out.resize(total, 0);

        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[6] = self.dtype.code();
        out[8..16].copy_from_slice(&n.to_le_bytes());
        out[16..24].copy_from_slice(&self.count().to_le_bytes());

        let mut at = layout::index_base(n) as usize;
        for g in chunk_groups(&self.indices) {
            let k = (g.end - g.start) as u32;
            let len = layout::chunk_len(n, g.chunk);
            let slot = HEADER_BYTES + 4 * g.chunk as usize;
            out[slot..slot + 4].copy_from_slice(&k.to_le_bytes());
            let local = &self.indices[g.start..g.end];
            if layout::uses_bitmap(k, len) {
                let words = layout::bitmap_bytes(len) as usize;
                let bitmap = &mut out[at..at + words];
                // Build each word in a register; entries are sorted, so a
                // word is complete when the next entry lies past it.
                let mut word_at = usize::MAX;
                let mut word = 0u32;
                for &i in local {
                    let b = (i & LOCAL_MASK) as usize;
                    if b / 32 != word_at {
                        if word_at != usize::MAX {
                            bitmap[4 * word_at..4 * word_at + 4].copy_from_slice(&word.to_le_bytes());
                        }
                        word_at = b / 32;
                        word = 0;
                    }
                    word |= 1 << (b % 32);
                }
                bitmap[4 * word_at..4 * word_at + 4].copy_from_slice(&word.to_le_bytes());
                at += words;
            } else {
                let list = &mut out[at..at + 2 * local.len()];
                for (dst, &i) in list.chunks_exact_mut(2).zip(local) {
                    dst.copy_from_slice(&((i & LOCAL_MASK) as u16).to_le_bytes());
                }
                at += layout::list_bytes(k) as usize;
            }
        }

        let size = self.dtype.size();
        let vals = &mut out[at..at + size * self.values.len()];
        // A value the dtype would round is not what `new` built: reported
        // as `check` reports it (`dequantize` is exact, so comparing bits
        // after the conversion the loop does anyway is the whole test).
        let not_representable = |p: usize| WireError::NotRepresentable { position: p as u64 };
        match self.dtype {
            WireDtype::F32 => {
                for (dst, &v) in vals.chunks_exact_mut(4).zip(&self.values) {
                    dst.copy_from_slice(&v.to_bits().to_le_bytes());
                }
            }
            // One loop per dtype, so the conversion is specialised and inlined.
            WireDtype::F16 => {
                for (p, (dst, &v)) in vals.chunks_exact_mut(2).zip(&self.values).enumerate() {
                    let q = quantize::quantize(v, WireDtype::F16);
                    if quantize::dequantize(q, WireDtype::F16).to_bits() != v.to_bits() {
                        return Err(not_representable(p));
                    }
                    dst.copy_from_slice(&(q as u16).to_le_bytes());
                }
            }
            WireDtype::Bf16 => {
                for (p, (dst, &v)) in vals.chunks_exact_mut(2).zip(&self.values).enumerate() {
                    let q = quantize::quantize(v, WireDtype::Bf16);
                    if quantize::dequantize(q, WireDtype::Bf16).to_bits() != v.to_bits() {
                        return Err(not_representable(p));
                    }
                    dst.copy_from_slice(&(q as u16).to_le_bytes());
                }
            }
        }

        // Always Some: every section is a whole number of u32 words.
        let sum = checksum(out).unwrap_or(0);
        out[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
        Ok(())
    }

    /// Decodes and fully validates a packed buffer; see [`crate::wire::decode`].
    pub fn decode(bytes: &[u8]) -> Result<PackedDelta, WireError> {
        super::decode::decode(bytes)
    }

    /// Decodes and fully validates `bytes` into `self`, reusing its vectors'
    /// capacity. On error `self` is left exactly as it was.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        super::decode::PackedView::parse(bytes)?.to_delta_into(self);
        Ok(())
    }
}

/// Total bytes of a buffer for dense length `n`, `dtype` and the per-chunk
/// entry counts (`num_chunks(n)` of them, each at most its chunk's length):
/// the arithmetic of [`Layout::new`], saturating on overflow.
pub fn encoded_len(n: u64, dtype: WireDtype, chunk_counts: &[u32]) -> u64 {
    Layout::new(n, dtype, chunk_counts).total_bytes
}

/// The entries of one chunk: `indices[start..end]` all lie in `chunk`.
struct ChunkGroup {
    chunk: u64,
    start: usize,
    end: usize,
}

/// Splits sorted indices into runs that share a chunk, in order; chunks with
/// no entries are skipped.
fn chunk_groups(indices: &[u64]) -> impl Iterator<Item = ChunkGroup> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let first = *indices.get(start)?;
        let chunk = first >> CHUNK_SHIFT;
        // Sorted input: the run is a prefix, found by binary search, so
        // grouping costs O(chunks * log) rather than a pass over the entries.
        // At least 1 (the first entry is in the chunk), so a broken,
        // unsorted hand-built delta cannot make this loop forever.
        let len = indices[start..].partition_point(|&i| i >> CHUNK_SHIFT == chunk).max(1);
        let group = ChunkGroup { chunk, start, end: start + len };
        start += len;
        Some(group)
    })
}

/// The checks shared by [`PackedDelta::new`] and [`PackedDelta::check`].
fn check_entries(n: u64, indices: &[u64], values: &[f32]) -> Result<(), WireError> {
    if indices.len() != values.len() {
        return Err(WireError::EntryLengths { indices: indices.len() as u64, values: values.len() as u64 });
    }
    for (p, pair) in indices.windows(2).enumerate() {
        if pair[1] <= pair[0] {
            return Err(misordered(indices, p + 1));
        }
    }
    if let Some(&last) = indices.last()
        && last >= n
    {
        let position = indices.partition_point(|&i| i < n);
        return Err(WireError::IndexPastEnd { position: position as u64, index: indices[position], n });
    }
    if let Some(p) = values.iter().position(|v| !v.is_finite()) {
        return Err(WireError::NonFiniteValue { position: p as u64 });
    }
    Ok(())
}

/// The error for `indices[p] <= indices[p - 1]`, located in the chunk of
/// `indices[p]` by its position among that chunk's earlier entries.
fn misordered(indices: &[u64], p: usize) -> WireError {
    let chunk = indices[p] >> CHUNK_SHIFT;
    let chunk_start = chunk << CHUNK_SHIFT;
    // indices[..p] is sorted, so the entries of this chunk before p form a suffix.
    let first = indices[..p].partition_point(|&i| i < chunk_start);
    WireError::Misordered { chunk, position: (p - first) as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_each_broken_invariant() {
        let f = WireDtype::F32;
        assert_eq!(
            PackedDelta::new(10, f, vec![1, 2], vec![1.0]),
            Err(WireError::EntryLengths { indices: 2, values: 1 })
        );
        assert_eq!(
            PackedDelta::new(10, f, vec![1, 3, 3], vec![1.0; 3]),
            Err(WireError::Misordered { chunk: 0, position: 2 })
        );
        assert_eq!(
            PackedDelta::new(200_000, f, vec![5, 70_000, 70_001, 65_540], vec![1.0; 4]),
            Err(WireError::Misordered { chunk: 1, position: 2 })
        );
        assert_eq!(
            PackedDelta::new(10, f, vec![1, 10, 11], vec![1.0; 3]),
            Err(WireError::IndexPastEnd { position: 1, index: 10, n: 10 })
        );
        assert_eq!(
            PackedDelta::new(10, f, vec![1, 2], vec![1.0, f32::NAN]),
            Err(WireError::NonFiniteValue { position: 1 })
        );
        assert_eq!(
            PackedDelta::new(10, f, vec![1], vec![f32::NEG_INFINITY]),
            Err(WireError::NonFiniteValue { position: 0 })
        );
    }

    #[test]
    fn unallocatable_buffer_is_too_large() {
        // The chunk table alone would be 2^50 bytes: more than any address space here.
        let d = PackedDelta::new(u64::MAX, WireDtype::F32, vec![u64::MAX - 1], vec![1.0]).unwrap();
        let mut out = vec![1u8; 8];
        let bytes = 32 + 4 * (1u64 << 48) + 4 + 4;
        assert_eq!(d.encode_into(&mut out), Err(WireError::TooLarge { n: u64::MAX, bytes }));
        assert!(out.is_empty());
        assert_eq!(d.encode(), Err(WireError::TooLarge { n: u64::MAX, bytes }));
    }

    #[test]
    fn new_quantizes_and_saturates() {
        let d = PackedDelta::new(4, WireDtype::F16, vec![0, 1, 2], vec![1.0e6, -1.0e6, 1.0 + 1.0 / 4096.0]).unwrap();
        assert_eq!(d.values, vec![65504.0, -65504.0, 1.0]);
        let d = PackedDelta::new(4, WireDtype::Bf16, vec![3], vec![1.0 + 1.0 / 256.0 + 1.0 / 1024.0]).unwrap();
        assert_eq!(d.values, vec![1.0 + 1.0 / 128.0]);
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn check_flags_unrounded_values() {
        let d = PackedDelta { n: 4, dtype: WireDtype::Bf16, indices: vec![0], values: vec![1.0 + 1.0 / 1024.0] };
        assert_eq!(d.check(), Err(WireError::NotRepresentable { position: 0 }));
    }

    /// A delta broken through the public fields is never encoded: `encode`
    /// returns the error `check` reports, in every build profile (no
    /// reliance on overflow checks or debug assertions), and leaves the
    /// output buffer empty.
    #[test]
    fn broken_hand_built_delta_is_reported_and_never_encodes_to_a_valid_buffer() {
        let f = WireDtype::F32;
        let broken = [
            // Misordered, inside a chunk and across chunks.
            PackedDelta { n: 10, dtype: f, indices: vec![5, 3], values: vec![1.0, 2.0] },
            PackedDelta { n: 200_000, dtype: f, indices: vec![70_000, 5], values: vec![1.0, 2.0] },
            PackedDelta { n: 10, dtype: f, indices: vec![4, 4], values: vec![1.0, 2.0] },
            // Past the end, in the last chunk and past the last chunk.
            PackedDelta { n: 10, dtype: f, indices: vec![10], values: vec![1.0] },
            PackedDelta { n: 10, dtype: f, indices: vec![70_000], values: vec![1.0] },
            PackedDelta { n: 10, dtype: f, indices: vec![u64::MAX], values: vec![1.0] },
            PackedDelta { n: 0, dtype: f, indices: vec![0], values: vec![1.0] },
            // Lengths differ.
            PackedDelta { n: 10, dtype: f, indices: vec![1, 2], values: vec![1.0] },
            PackedDelta { n: 10, dtype: f, indices: vec![1], values: vec![1.0, 2.0] },
            // Non-finite and unrepresentable values.
            PackedDelta { n: 10, dtype: f, indices: vec![1], values: vec![f32::NAN] },
            PackedDelta { n: 10, dtype: WireDtype::F16, indices: vec![1], values: vec![f32::INFINITY] },
            PackedDelta { n: 10, dtype: WireDtype::Bf16, indices: vec![1, 2], values: vec![1.0, 1.0 + 1.0 / 1024.0] },
            PackedDelta { n: 10, dtype: WireDtype::F16, indices: vec![1], values: vec![1.0e6] },
            PackedDelta { n: 10, dtype: WireDtype::F16, indices: vec![1], values: vec![1.0e-30] },
        ];
        for d in &broken {
            let want = d.check().expect_err("the sample is broken");
            assert_eq!(d.encode(), Err(want.clone()), "{d:?}");
            let mut out = vec![0xAA; 64];
            assert_eq!(d.encode_into(&mut out), Err(want), "{d:?}");
            assert!(out.is_empty());
            // The size helpers answer without panicking.
            let _ = (d.encoded_len(), d.chunk_counts());
        }
        assert_eq!(broken[0].encode(), Err(WireError::Misordered { chunk: 0, position: 1 }));
        assert_eq!(broken[4].encode(), Err(WireError::IndexPastEnd { position: 0, index: 70_000, n: 10 }));
        assert_eq!(broken[11].encode(), Err(WireError::NotRepresentable { position: 1 }));
    }

    #[test]
    fn encoded_len_agrees_with_layout_and_bytes() {
        let n = 3 * CHUNK_ELEMS as u64 + 17;
        // chunk 0: list, chunk 1: empty, chunk 2: bitmap, chunk 3: list of 1.
        let mut indices: Vec<u64> = vec![3, 9, 4000];
        indices.extend((0..5000).map(|i| 2 * CHUNK_ELEMS as u64 + 7 * i));
        indices.push(3 * CHUNK_ELEMS as u64 + 16);
        let values = vec![0.5; indices.len()];
        for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Bf16] {
            let d = PackedDelta::new(n, dtype, indices.clone(), values.clone()).unwrap();
            assert_eq!(d.chunk_counts(), vec![3, 0, 5000, 1]);
            let lay = d.layout();
            assert_eq!(lay.total_bytes, d.encoded_len());
            assert_eq!(encoded_len(n, dtype, &d.chunk_counts()), d.encoded_len());
            assert_eq!(d.encode().unwrap().len() as u64, d.encoded_len());
            // list 3 -> 8 bytes, empty -> 0, bitmap -> 8192, list 1 -> 4.
            assert_eq!(lay.index_offsets[4] - lay.index_offsets[0], 8 + 8192 + 4);
        }
    }

    #[test]
    fn encode_into_reuses_capacity_and_matches_encode() {
        let d = PackedDelta::new(100, WireDtype::Bf16, vec![1, 50, 99], vec![1.0, -2.0, 3.0]).unwrap();
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&[0xAA; 100]);
        let ptr = out.as_ptr();
        d.encode_into(&mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out, d.encode().unwrap());
    }

    #[test]
    fn decode_into_reuses_capacity_and_keeps_state_on_error() {
        let a =
            PackedDelta::new(100_000, WireDtype::F16, (0..5000).map(|i| 17 * i).collect(), vec![0.5; 5000]).unwrap();
        let b = PackedDelta::new(10, WireDtype::F32, vec![2, 9], vec![1.0, -1.0]).unwrap();
        let mut out = a.clone();
        let ptr = out.indices.as_ptr();
        out.decode_into(&b.encode().unwrap()).unwrap();
        assert_eq!(out, b);
        assert_eq!(out.indices.as_ptr(), ptr);
        let mut bad = a.encode().unwrap();
        bad[40] ^= 1;
        let before = out.clone();
        assert!(out.decode_into(&bad).is_err());
        assert_eq!(out, before);
    }

    #[test]
    fn empty_delta_is_header_and_table() {
        let d = PackedDelta::empty(CHUNK_ELEMS as u64 + 1, WireDtype::F32);
        let b = d.encode().unwrap();
        assert_eq!(b.len(), HEADER_BYTES + 8);
        assert!(b[HEADER_BYTES..].iter().all(|&x| x == 0));
        assert_eq!(PackedDelta::decode(&b), Ok(d));
    }
}

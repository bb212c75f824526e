//! Where everything sits inside a packed buffer. Shared by the encoder, the
//! decoder and every backend's packer so that all of them agree on offsets.

use crate::config::WireDtype;

/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 32;
/// Elements per chunk; chunk-local indices fit in a `u16`.
pub const CHUNK_ELEMS: usize = 65_536;
/// Magic at offset 0.
pub const MAGIC: [u8; 4] = *b"CSPD";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Byte offset of the checksum field in the header.
pub const CHECKSUM_OFFSET: usize = 24;

/// Number of chunks for a dense length `n`.
pub const fn num_chunks(n: u64) -> u64 {
    n.div_ceil(CHUNK_ELEMS as u64)
}

/// Elements in chunk `c` of a vector of length `n` (0 for a chunk at or
/// past the end).
pub const fn chunk_len(n: u64, c: u64) -> u32 {
    let start = c.saturating_mul(CHUNK_ELEMS as u64);
    let rest = n.saturating_sub(start);
    if rest < CHUNK_ELEMS as u64 { rest as u32 } else { CHUNK_ELEMS as u32 }
}

/// Bytes of a chunk's bitmap: one bit per element, in whole `u32` words.
pub const fn bitmap_bytes(chunk_len: u32) -> u64 {
    (chunk_len as u64).div_ceil(32) * 4
}

/// Bytes of a chunk's index list: one `u16` per entry, padded to a `u32` word.
pub const fn list_bytes(count: u32) -> u64 {
    (count as u64).div_ceil(2) * 4
}

/// A chunk is encoded as a bitmap exactly when its list would be strictly larger.
pub const fn uses_bitmap(count: u32, chunk_len: u32) -> bool {
    list_bytes(count) > bitmap_bytes(chunk_len)
}

/// Bytes of a chunk's index section (list or bitmap, whichever is used).
pub const fn index_section_bytes(count: u32, chunk_len: u32) -> u64 {
    if uses_bitmap(count, chunk_len) { bitmap_bytes(chunk_len) } else { list_bytes(count) }
}

/// Byte offset of the first chunk's index section (after header and chunk table).
pub const fn index_base(n: u64) -> u64 {
    // No overflow: at most 2^48 chunks.
    HEADER_BYTES as u64 + 4 * num_chunks(n)
}

/// Bytes of the values section for `count` values of `dtype`, padded to a
/// `u32` word (saturating at `u64::MAX` rounded down to a word, for counts no
/// buffer can hold).
pub const fn values_bytes(count: u64, dtype: WireDtype) -> u64 {
    match count.checked_mul(dtype.size() as u64) {
        Some(b) if b <= u64::MAX - 3 => b.div_ceil(4) * 4,
        _ => u64::MAX - 3,
    }
}

/// Offsets of every section of one packed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Dense length.
    pub n: u64,
    /// Value dtype.
    pub dtype: WireDtype,
    /// Total entries.
    pub count: u64,
    /// Byte offset of each chunk's index section, plus one final entry: the
    /// offset of the values section.
    pub index_offsets: Vec<u64>,
    /// Entries before each chunk (exclusive prefix sum of the chunk counts).
    pub entry_offsets: Vec<u64>,
    /// Total length of the buffer in bytes.
    pub total_bytes: u64,
}

impl Layout {
    /// Lays out a buffer for the given per-chunk entry counts, which must have
    /// `num_chunks(n)` elements each at most that chunk's length (callers
    /// validate; this only does arithmetic, saturating on overflow).
    pub fn new(n: u64, dtype: WireDtype, chunk_counts: &[u32]) -> Layout {
        let mut index_offsets = Vec::with_capacity(chunk_counts.len() + 1);
        let mut entry_offsets = Vec::with_capacity(chunk_counts.len());
        let mut at = index_base(n);
        let mut count = 0u64;
        for (c, &k) in chunk_counts.iter().enumerate() {
            index_offsets.push(at);
            entry_offsets.push(count);
            at = at.saturating_add(index_section_bytes(k, chunk_len(n, c as u64)));
            count += k as u64;
        }
        index_offsets.push(at);
        let total_bytes = at.saturating_add(values_bytes(count, dtype));
        Layout { n, dtype, count, index_offsets, entry_offsets, total_bytes }
    }

    /// Byte offset of the values section (the last of `index_offsets`,
    /// which [`Layout::new`] never leaves empty; 0 for a hand-built layout
    /// without offsets).
    pub fn values_offset(&self) -> u64 {
        self.index_offsets.last().copied().unwrap_or(0)
    }
}

/// An upper bound on the bytes of any buffer for `n` elements of `dtype`
/// holding at most `max_entries` entries (for preallocating receive space
/// and bounding readbacks; saturating at `u64::MAX`). With `max_entries =
/// n` it is exactly the size of the dense buffer, the largest there is.
pub const fn max_packed_bytes(n: u64, dtype: WireDtype, max_entries: u64) -> u64 {
    let chunks = num_chunks(n);
    // A chunk's index section is at most its list (<= 2 * count + 2 bytes)
    // and at most its bitmap: every chunk a bitmap is exact (full chunks of
    // 8 KiB, the last one rounded up to a word), so a dense buffer's bound
    // is its size.
    let as_lists = max_entries.saturating_mul(2).saturating_add(2 * chunks);
    let full = n / CHUNK_ELEMS as u64;
    let as_bitmaps = full * bitmap_bytes(CHUNK_ELEMS as u32) + bitmap_bytes((n % CHUNK_ELEMS as u64) as u32);
    let index = if as_lists < as_bitmaps { as_lists } else { as_bitmaps };
    index_base(n).saturating_add(index).saturating_add(values_bytes(max_entries, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every entry present the bound is the dense buffer's size, the
    /// largest any count can produce; with fewer entries it still holds
    /// every layout.
    #[test]
    fn max_packed_bytes_is_exact_for_dense_and_bounds_the_rest() {
        for n in [1u64, 31, 32, 33, 65_535, 65_536, 65_537, 140_000, 3 * 65_536] {
            for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Bf16] {
                let full: Vec<u32> = (0..num_chunks(n)).map(|c| chunk_len(n, c)).collect();
                assert_eq!(max_packed_bytes(n, dtype, n), Layout::new(n, dtype, &full).total_bytes, "n {n}");
                for entries in [1u64, n / 100 + 1, n / 3 + 1] {
                    // The counts that maximize the index sections: as many
                    // entries as possible in as many chunks as possible.
                    let mut left = entries;
                    let counts: Vec<u32> = full
                        .iter()
                        .map(|&len| {
                            let per = entries.div_ceil(full.len() as u64).min(u64::from(len)).min(left);
                            left -= per;
                            per as u32
                        })
                        .collect();
                    let total = Layout::new(n, dtype, &counts).total_bytes;
                    assert!(max_packed_bytes(n, dtype, entries) >= total, "n {n} entries {entries}");
                }
            }
        }
    }

    /// The size helpers are total: out-of-range arguments give saturated
    /// or zero sizes in every profile, never an overflow.
    #[test]
    fn size_helpers_saturate() {
        assert_eq!(chunk_len(10, 0), 10);
        assert_eq!(chunk_len(10, 1), 0);
        assert_eq!(chunk_len(10, u64::MAX), 0);
        assert_eq!(chunk_len(u64::MAX, u64::MAX), 0);
        assert_eq!(values_bytes(u64::MAX, WireDtype::F32), u64::MAX - 3);
        assert_eq!(values_bytes(u64::MAX / 2, WireDtype::Bf16), u64::MAX - 3);
        assert_eq!(values_bytes(3, WireDtype::Bf16), 8);
        assert_eq!(max_packed_bytes(u64::MAX, WireDtype::F32, u64::MAX), u64::MAX);
        // More counts than `n` has chunks (callers validate; this is only
        // arithmetic): chunk 0 a 4-byte bitmap, the extra chunk empty.
        let lay = Layout::new(10, WireDtype::F32, &[5, 70_000]);
        assert_eq!(lay.total_bytes, 32 + 4 + 4 + 4 * 70_005);
    }
}

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
/// holding at most `max_entries` entries (for preallocating receive space;
/// saturating at `u64::MAX`).
pub const fn max_packed_bytes(n: u64, dtype: WireDtype, max_entries: u64) -> u64 {
    let chunks = num_chunks(n);
    // A chunk's index section is at most its list (<= 2 * count + 2 bytes)
    // and at most its bitmap (<= len / 8 + 4 bytes).
    let as_lists = max_entries.saturating_mul(2).saturating_add(2 * chunks);
    let as_bitmaps = n / 8 + 4 * chunks;
    let index = if as_lists < as_bitmaps { as_lists } else { as_bitmaps };
    index_base(n).saturating_add(index).saturating_add(values_bytes(max_entries, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

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

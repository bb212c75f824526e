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

/// Elements in chunk `c` of a vector of length `n`.
pub const fn chunk_len(n: u64, c: u64) -> u32 {
    let start = c * CHUNK_ELEMS as u64;
    let rest = n - start;
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
    HEADER_BYTES as u64 + 4 * num_chunks(n)
}

/// Bytes of the values section for `count` values of `dtype`, padded to a `u32` word.
pub const fn values_bytes(count: u64, dtype: WireDtype) -> u64 {
    (count * dtype.size() as u64).div_ceil(4) * 4
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

    /// Byte offset of the values section.
    pub fn values_offset(&self) -> u64 {
        *self.index_offsets.last().expect("index_offsets is never empty")
    }
}

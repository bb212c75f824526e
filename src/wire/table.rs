//! The one reader of a packed buffer's header and chunk table.
//!
//! Every consumer of untrusted packed bytes starts here: the decoder
//! ([`super::PackedView`], [`super::Validator`]), the splitting of grouped
//! exchanges ([`super::Validator::leading_len`]) and every backend's `apply`
//! (CPU, wgpu, CUDA), which take the per-chunk offsets from a [`ChunkTable`]
//! and upload or walk what they need. The body (index sections, values,
//! checksum) is not read here: that is the decoder's full validation.
//!
//! Order of checks, the decoder's too: the header (length >= 32, magic,
//! version, dtype code, reserved fields), then the chunk table against the
//! chunk lengths and the header's count, then the exact total length (all
//! sizes in checked arithmetic, before anything is allocated from them),
//! then, for [`ChunkTable::read_for`], the expected `n` and dtype.

use super::layout::{self, FORMAT_VERSION, HEADER_BYTES, Layout, MAGIC};
use crate::config::WireDtype;
use crate::error::WireError;

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// Checks length >= 32, magic and version; returns the untrusted count.
fn read_count(bytes: &[u8]) -> Result<u64, WireError> {
    if bytes.len() < HEADER_BYTES {
        return Err(WireError::Truncated { needed: HEADER_BYTES as u64, have: bytes.len() as u64 });
    }
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != MAGIC {
        return Err(WireError::BadMagic { found });
    }
    let version = u16_at(bytes, 4);
    if version != FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    Ok(u64_at(bytes, 16))
}

/// Reads the entry count from a header, checking only the length (>= 32),
/// magic and version: cheap, for sizing before a full
/// [`super::PackedView::parse`].
pub fn peek_count(bytes: &[u8]) -> Result<u64, WireError> {
    read_count(bytes)
}

/// Where one chunk's entries sit in its packed buffer (offsets from the
/// buffer's first byte), as read from a [`ChunkTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Chunk number `c`: local index `j` is global index `65536 * c + j`.
    pub chunk: u64,
    /// Elements the chunk spans (65,536, or fewer for the last chunk).
    pub len: u32,
    /// Entries in the chunk (at most `len`).
    pub count: u32,
    /// Entries of the buffer before this chunk's first.
    pub first_entry: u64,
    /// Whether the index section is a bitmap (else a `u16` list).
    pub bitmap: bool,
    /// Byte offset of the chunk's index section.
    pub index_offset: u64,
    /// Byte offset of the chunk's first value.
    pub value_offset: u64,
}

/// The header and chunk table of one packed buffer, checked against the
/// format's structural rules (docs/wire-format.md) and turned into a
/// [`Layout`]: the plain offsets every consumer works from.
///
/// Reusable: a `read` refills the same vectors, so a caller that keeps one
/// table per peer allocates nothing once the tables have held as many
/// chunks. After a failed read the table is empty (no chunks, `n = 0`).
#[derive(Debug, Clone)]
pub struct ChunkTable {
    layout: Layout,
}

impl Default for ChunkTable {
    fn default() -> Self {
        ChunkTable::new()
    }
}

impl ChunkTable {
    /// An empty table (allocates nothing).
    pub fn new() -> ChunkTable {
        ChunkTable {
            layout: Layout {
                n: 0,
                dtype: WireDtype::F32,
                count: 0,
                index_offsets: Vec::new(),
                entry_offsets: Vec::new(),
                total_bytes: 0,
            },
        }
    }

    /// A table whose vectors already fit buffers for `n` elements (best
    /// effort: when that much cannot be allocated it starts empty and grows
    /// on use; never a panic or an abort).
    pub fn for_len(n: u64) -> ChunkTable {
        let chunks = usize::try_from(layout::num_chunks(n)).unwrap_or(0);
        let mut t = ChunkTable::new();
        if t.layout.index_offsets.try_reserve_exact(chunks.saturating_add(1)).is_err()
            || t.layout.entry_offsets.try_reserve_exact(chunks).is_err()
        {
            t = ChunkTable::new();
        }
        t
    }

    /// Reads the header and chunk table at the start of `bytes`, which may
    /// hold more after the buffer (a grouped exchange's concatenation), and
    /// returns the buffer's total length as they imply it: possibly more
    /// than `bytes.len()` (the caller compares; `u64::MAX` when the size
    /// overflows). Errors: [`WireError::Truncated`] when `bytes` ends inside
    /// the header or the table, [`WireError::BadMagic`],
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownDtype`],
    /// [`WireError::NonZeroReserved`] (header bytes 7 and 28..32),
    /// [`WireError::ChunkOverfull`], [`WireError::CountMismatch`].
    pub fn read_prefix(&mut self, bytes: &[u8]) -> Result<u64, WireError> {
        let result = self.scan(bytes);
        if result.is_err() {
            self.clear();
        }
        result
    }

    /// [`ChunkTable::read_prefix`], then the length: `bytes` must be exactly
    /// the one buffer, else [`WireError::Truncated`] or
    /// [`WireError::Oversized`].
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let total = self.read_prefix(bytes)?;
        let have = bytes.len() as u64;
        let err = if have < total {
            WireError::Truncated { needed: total, have }
        } else if have > total {
            WireError::Oversized { expected: total, have }
        } else {
            return Ok(());
        };
        self.clear();
        Err(err)
    }

    /// [`ChunkTable::read`], then [`WireError::Mismatch`] unless the buffer
    /// is for `n` elements of `dtype` (what a backend's state holds).
    pub fn read_for(&mut self, bytes: &[u8], n: u64, dtype: WireDtype) -> Result<(), WireError> {
        self.read(bytes)?;
        let (found_n, found_dtype) = (self.layout.n, self.layout.dtype);
        if found_n != n || found_dtype != dtype {
            self.clear();
            return Err(WireError::Mismatch { n, dtype, found_n, found_dtype });
        }
        Ok(())
    }

    /// The offsets read (`total_bytes` is the buffer's implied length).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Gives up the table, returning its layout.
    pub fn into_layout(self) -> Layout {
        self.layout
    }

    /// Number of chunks, `ceil(n / 65536)`.
    pub fn num_chunks(&self) -> usize {
        self.layout.entry_offsets.len()
    }

    /// Chunk `c`'s span, or `None` when `c >= num_chunks()`.
    pub fn chunk(&self, c: usize) -> Option<ChunkSpan> {
        let lay = &self.layout;
        let first_entry = *lay.entry_offsets.get(c)?;
        let next = lay.entry_offsets.get(c + 1).copied().unwrap_or(lay.count);
        let count = (next - first_entry) as u32;
        let len = layout::chunk_len(lay.n, c as u64);
        Some(ChunkSpan {
            chunk: c as u64,
            len,
            count,
            first_entry,
            bitmap: layout::uses_bitmap(count, len),
            index_offset: lay.index_offsets[c],
            value_offset: lay.values_offset() + first_entry * lay.dtype.size() as u64,
        })
    }

    /// Every chunk's span, in order.
    pub fn spans(&self) -> impl ExactSizeIterator<Item = ChunkSpan> + '_ {
        (0..self.num_chunks()).map(|c| self.chunk(c).expect("c < num_chunks"))
    }

    fn clear(&mut self) {
        let lay = &mut self.layout;
        lay.n = 0;
        lay.count = 0;
        lay.total_bytes = 0;
        lay.index_offsets.clear();
        lay.entry_offsets.clear();
    }

    /// The checks of [`ChunkTable::read_prefix`], filling the layout.
    fn scan(&mut self, bytes: &[u8]) -> Result<u64, WireError> {
        let count = read_count(bytes)?;
        let dtype = WireDtype::from_code(bytes[6]).ok_or(WireError::UnknownDtype { code: bytes[6] })?;
        if bytes[7] != 0 {
            return Err(WireError::NonZeroReserved { offset: 7 });
        }
        if let Some(i) = bytes[28..32].iter().position(|&b| b != 0) {
            return Err(WireError::NonZeroReserved { offset: 28 + i as u64 });
        }
        let n = u64_at(bytes, 8);
        let have = bytes.len() as u64;
        // num_chunks(n) <= 2^48, so this cannot overflow.
        let table_end = layout::index_base(n);
        if have < table_end {
            return Err(WireError::Truncated { needed: table_end, have });
        }
        // The table is inside the buffer, so the chunk count is bounded by
        // the buffer length and the vectors below are too.
        let chunks = ((table_end - HEADER_BYTES as u64) / 4) as usize;
        let table = &bytes[HEADER_BYTES..table_end as usize];
        let lay = &mut self.layout;
        lay.index_offsets.clear();
        lay.entry_offsets.clear();
        lay.index_offsets.reserve(chunks + 1);
        lay.entry_offsets.reserve(chunks);
        let mut at = table_end;
        let mut entries = 0u64;
        for (c, slot) in table.chunks_exact(4).enumerate() {
            let k = u32_at(slot, 0);
            let len = layout::chunk_len(n, c as u64);
            if k > len {
                return Err(WireError::ChunkOverfull { chunk: c as u64, count: k, len });
            }
            lay.index_offsets.push(at);
            lay.entry_offsets.push(entries);
            at = at.saturating_add(layout::index_section_bytes(k, len));
            // k <= chunk length and the chunk lengths sum to n: no overflow.
            entries += u64::from(k);
        }
        lay.index_offsets.push(at);
        if entries != count {
            return Err(WireError::CountMismatch { header: count, table: entries, n });
        }
        let size = dtype.size() as u64;
        let total = count
            .checked_mul(size)
            .and_then(|b| b.checked_add(3))
            .map(|b| b & !3)
            .and_then(|vb| vb.checked_add(at))
            .unwrap_or(u64::MAX);
        (lay.n, lay.dtype, lay.count, lay.total_bytes) = (n, dtype, count, total);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PackedDelta;
    use crate::wire::layout::CHUNK_ELEMS;

    #[test]
    fn spans_match_the_encoder_layout() {
        let n = 2 * CHUNK_ELEMS as u64 + 10;
        // 5000 entries: a list would take 10,000 bytes, the bitmap 8192.
        let mut indices: Vec<u64> = (0..5000).map(|i| 13 * i).collect();
        indices.extend([2 * CHUNK_ELEMS as u64 + 3, 2 * CHUNK_ELEMS as u64 + 9]);
        let values = vec![1.5; indices.len()];
        let d = PackedDelta::new(n, WireDtype::Bf16, indices, values).unwrap();
        let bytes = d.encode().unwrap();
        let mut t = ChunkTable::new();
        t.read_for(&bytes, n, WireDtype::Bf16).unwrap();
        assert_eq!(*t.layout(), d.layout());
        let spans: Vec<ChunkSpan> = t.spans().collect();
        assert_eq!(
            spans.iter().map(|s| (s.count, s.bitmap)).collect::<Vec<_>>(),
            [(5000, true), (0, false), (2, false)]
        );
        let values_at = d.layout().values_offset();
        assert_eq!(spans[2].value_offset, values_at + 2 * 5000);
        assert_eq!(spans[2].index_offset, d.layout().index_offsets[2]);
        assert_eq!(spans[2].len, 10);
        assert!(t.chunk(3).is_none());
    }

    #[test]
    fn errors_leave_the_table_empty() {
        let d = PackedDelta::new(100, WireDtype::F32, vec![1, 5], vec![1.0, 2.0]).unwrap();
        let bytes = d.encode().unwrap();
        let mut t = ChunkTable::new();
        t.read(&bytes).unwrap();
        assert_eq!(t.num_chunks(), 1);
        assert_eq!(
            t.read(&bytes[..bytes.len() - 4]),
            Err(WireError::Truncated { needed: bytes.len() as u64, have: bytes.len() as u64 - 4 })
        );
        assert_eq!((t.num_chunks(), t.layout().n), (0, 0));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(t.read_prefix(&longer), Ok(bytes.len() as u64));
        assert_eq!(
            t.read(&longer),
            Err(WireError::Oversized { expected: bytes.len() as u64, have: longer.len() as u64 })
        );
        assert!(matches!(t.read_for(&bytes, 101, WireDtype::F32), Err(WireError::Mismatch { found_n: 100, .. })));
        assert_eq!(t.num_chunks(), 0);
    }
}

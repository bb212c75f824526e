//! Host-side bounds checking of the gathered peer buffers before `apply`
//! uploads them: enough of the wire format (docs/wire-format.md) to prove
//! that every offset the apply kernel will read lies inside the rank's bytes.
//! (Full validation — ordering, padding, checksum — is the decoder's job,
//! which `SparseSync::step` runs before `apply`.)

use super::kernels::DESC_WORDS;
use super::state::chunks;
use crate::config::WireDtype;
use crate::error::WireError;
use crate::wire::layout::{self, FORMAT_VERSION, HEADER_BYTES, Layout, MAGIC};

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32)
}

/// Appends one [`DESC_WORDS`]-word descriptor per chunk of the buffer `bytes`,
/// which starts at byte `base` of the uploaded peer bytes: count, bitmap
/// flag, absolute index-section offset (lo, hi), absolute offset of the
/// chunk's first value (lo, hi), chunk length, 0.
pub fn describe(bytes: &[u8], base: u64, n: usize, dtype: WireDtype, out: &mut Vec<u32>) -> Result<(), WireError> {
    let have = bytes.len() as u64;
    if bytes.len() < HEADER_BYTES {
        return Err(WireError::Truncated { needed: HEADER_BYTES as u64, have });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let found_dtype = WireDtype::from_code(bytes[6]).ok_or(WireError::UnknownDtype { code: bytes[6] })?;
    let found_n = le_u64(bytes, 8);
    if found_n != n as u64 || found_dtype != dtype {
        return Err(WireError::Mismatch { n: n as u64, dtype, found_n, found_dtype });
    }
    let c = chunks(n);
    let table_end = HEADER_BYTES as u64 + 4 * c as u64;
    if have < table_end {
        return Err(WireError::Truncated { needed: table_end, have });
    }
    let mut counts = Vec::with_capacity(c);
    for chunk in 0..c {
        let count = le_u32(bytes, HEADER_BYTES + 4 * chunk);
        let len = layout::chunk_len(n as u64, chunk as u64);
        if count > len {
            return Err(WireError::ChunkOverfull { chunk: chunk as u64, count, len });
        }
        counts.push(count);
    }
    let lay = Layout::new(n as u64, dtype, &counts);
    if lay.total_bytes > have {
        return Err(WireError::Truncated { needed: lay.total_bytes, have });
    }
    if lay.total_bytes < have {
        return Err(WireError::Oversized { expected: lay.total_bytes, have });
    }
    let size = dtype.size() as u64;
    for (chunk, &count) in counts.iter().enumerate() {
        let len = layout::chunk_len(n as u64, chunk as u64);
        let idx = base + lay.index_offsets[chunk];
        let val = base + lay.values_offset() + lay.entry_offsets[chunk] * size;
        out.extend_from_slice(&[
            count,
            u32::from(layout::uses_bitmap(count, len)),
            idx as u32,
            (idx >> 32) as u32,
            val as u32,
            (val >> 32) as u32,
            len,
            0,
        ]);
    }
    debug_assert_eq!(out.len() % DESC_WORDS, 0);
    Ok(())
}

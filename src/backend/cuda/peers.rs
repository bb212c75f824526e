//! The chunk descriptors `apply` uploads for gathered peer buffers that
//! `validate_peers` did not just check on the device (which writes them
//! there itself), built from each buffer's header and chunk table as the
//! shared reader ([`ChunkTable::read_for`]) reads them, which proves that
//! every offset the apply kernel will read lies inside the rank's bytes.
//! (Full validation — ordering, padding, checksum — is `validate_peers`'s
//! job, which the engine runs before `apply`.)

use super::kernels::DESC_WORDS;
use crate::config::WireDtype;
use crate::error::WireError;
use crate::wire::ChunkTable;

/// Reads the buffer `bytes` into `table` and appends one [`DESC_WORDS`]-word
/// descriptor per chunk; `bytes` starts at byte `base` of the uploaded peer
/// bytes. Words: count, bitmap flag, absolute index-section offset (lo,
/// hi), absolute offset of the chunk's first value (lo, hi), chunk length,
/// 0. Errors are the reader's; nothing is appended on an error.
pub fn describe(
    table: &mut ChunkTable,
    bytes: &[u8],
    base: u64,
    n: usize,
    dtype: WireDtype,
    out: &mut Vec<u32>,
) -> Result<(), WireError> {
    table.read_for(bytes, n as u64, dtype)?;
    for span in table.spans() {
        let idx = base + span.index_offset;
        let val = base + span.value_offset;
        out.extend_from_slice(&[
            span.count,
            u32::from(span.bitmap),
            idx as u32,
            (idx >> 32) as u32,
            val as u32,
            (val >> 32) as u32,
            span.len,
            0,
        ]);
    }
    debug_assert_eq!(out.len() % DESC_WORDS, 0);
    Ok(())
}

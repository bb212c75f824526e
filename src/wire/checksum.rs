//! The payload checksum: a wrapping sum of a per-word hash. Chosen because it
//! is a parallel reduction (any order, any tree, same bits), so GPU packers can
//! compute it on the device, while still catching any single-word change
//! (the hash is a bijection of the word for a fixed position) and moved words
//! (the position is mixed in).

use super::layout::CHECKSUM_OFFSET;

/// MurmurHash3's 32-bit finalizer: a bijection on `u32` with full avalanche.
#[inline]
pub const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Contribution of the little-endian word `w` found at word position `i`
/// (byte offset `4 * i`) of the buffer.
#[inline]
pub const fn word_term(i: u32, w: u32) -> u32 {
    fmix32(w ^ i.wrapping_mul(0x9e37_79b9))
}

/// Checksum of a whole packed buffer (length a multiple of 4): the wrapping sum
/// of [`word_term`] over every word except the checksum field itself (word 6).
/// Returns `None` when the length is not a multiple of 4.
pub fn checksum(buf: &[u8]) -> Option<u32> {
    if buf.len() % 4 != 0 {
        return None;
    }
    let skip = (CHECKSUM_OFFSET / 4) as u32;
    let mut sum = 0u32;
    for (i, w) in buf.chunks_exact(4).enumerate() {
        let i = i as u32;
        if i != skip {
            sum = sum.wrapping_add(word_term(i, u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
        }
    }
    Some(sum)
}

//! The checkpoint format (docs/checkpoint-format.md): a rank's whole sync
//! state (every bucket's accumulator, step counters and budget controller)
//! as one versioned, checksummed, little-endian buffer.
//!
//! [`Checkpoint::encode`] refuses a state that could not have come from an
//! engine (an accumulator of the wrong length, non-finite values,
//! `since_sync > steps`, `rank >= world`, a budget state out of range);
//! [`Checkpoint::decode`] treats its input as untrusted and returns a typed
//! [`CheckpointError`] for anything the encoder would not have written,
//! never a panic. Whether a decoded
//! checkpoint fits a given engine (world, rank, bucket count, lengths,
//! dtypes, configuration fingerprints from [`crate::SyncConfig::fingerprint`])
//! is the restoring engine's check; the `*Mismatch` variants of
//! [`CheckpointError`] name what differs.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use crate::config::WireDtype;
pub use crate::error::CheckpointError;

/// Magic at offset 0.
pub const MAGIC: [u8; 4] = *b"CSCK";
/// The format version this build writes and reads (version 1, without the
/// budget controller's state, is refused: docs/checkpoint-format.md).
pub const FORMAT_VERSION: u16 = 2;
/// Bytes of the file header.
pub const HEADER_BYTES: usize = 32;
/// Byte offset of the checksum field in the file header.
pub const CHECKSUM_OFFSET: usize = 24;
/// Bytes of one bucket's header (its accumulator values follow it).
pub const BUCKET_HEADER_BYTES: usize = 64;

/// A bucket's budget controller (see [`crate::ThresholdBudget`]): present
/// exactly when the bucket's configuration has a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetState {
    /// The steered threshold in force from the end of warm-up on: finite
    /// and > 0 (the restoring engine also holds it to its configuration's
    /// `[min_threshold, max_threshold]`).
    pub tau: f64,
    /// Running mean of the bucket's packed bytes per rank per sync: finite,
    /// >= 0, and 0 exactly when `syncs` is 0.
    pub mean_bytes: f64,
    /// Syncs counted into `mean_bytes`.
    pub syncs: u64,
}

/// One bucket (one sync engine's vector) in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketState {
    /// Dense length of the bucket's vector.
    pub n: u64,
    /// Wire dtype the bucket's engine sends.
    pub dtype: WireDtype,
    /// [`crate::SyncConfig::fingerprint`] of the bucket's configuration.
    pub config_fingerprint: u64,
    /// Steps taken so far (`t` of the last completed step; 0 before the first).
    pub steps: u64,
    /// Steps since the last sync (at most `steps`).
    pub since_sync: u64,
    /// The accumulator: `n` finite values.
    pub accumulator: Vec<f32>,
    /// The budget controller's state, `None` for a bucket without a budget.
    pub budget: Option<BudgetState>,
}

/// A rank's whole sync state: every bucket of one engine or one group, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// World size (at least 1).
    pub world: u32,
    /// This rank (below `world`).
    pub rank: u32,
    /// The buckets, in the engine's order.
    pub buckets: Vec<BucketState>,
}

impl Checkpoint {
    /// Appends the encoding to `out` (clears nothing).
    ///
    /// Errors, with `out` left as it was: [`CheckpointError::InvalidField`]
    /// for `world == 0` or `rank >= world`,
    /// [`CheckpointError::AccumulatorLength`] when an accumulator does not
    /// hold `n` values, [`CheckpointError::InvalidField`] for
    /// `since_sync > steps` and for a [`BudgetState`] out of its documented
    /// range (`budget.tau`, `budget.mean_bytes`), [`CheckpointError::NonFinite`] for a NaN or
    /// infinite accumulator value, [`CheckpointError::TooLarge`] when the
    /// buffer cannot be allocated.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CheckpointError> {
        encode::encode(self, out)
    }

    /// Length in bytes of what [`Checkpoint::encode`] appends when it
    /// succeeds (computed from each bucket's `n`, saturating at
    /// `usize::MAX`; no allocation).
    pub fn encoded_len(&self) -> usize {
        self.buckets.iter().fold(HEADER_BYTES, |sum, b| sum.saturating_add(bucket_bytes(b.n).unwrap_or(usize::MAX)))
    }

    /// Validates everything and decodes, in this order (see
    /// docs/checkpoint-format.md): length, magic and version; every announced
    /// length bounded by the bytes actually present, before anything is
    /// allocated; no trailing bytes; the checksum; then the fields, header
    /// first and then bucket by bucket: reserved bytes and padding zero,
    /// `world >= 1` and `rank < world`, dtype codes, `since_sync <= steps`,
    /// the budget flag and state, finite accumulator values.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        decode::decode(bytes)
    }
}

/// Bytes of one bucket record (header, values, padding to 8) for length `n`,
/// `None` when that overflows `usize`.
pub(crate) fn bucket_bytes(n: u64) -> Option<usize> {
    let n = usize::try_from(n).ok()?;
    let values = n.checked_mul(4)?;
    BUCKET_HEADER_BYTES.checked_add(values.checked_add(7)? & !7)
}

/// MurmurHash3's 64-bit finalizer: a bijection on `u64` with full avalanche.
#[inline]
const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Checksum of a whole checkpoint buffer (length a multiple of 8): viewing
/// it as little-endian u64 words `w_i`, the wrapping sum over every word but
/// the checksum field (word 3) of `fmix64(w_i ^ (i * 0x9E3779B97F4A7C15))`.
/// Any change confined to one word changes exactly one term, and each term
/// is a bijection of its word, so every single-byte change is caught.
/// Returns `None` when the length is not a multiple of 8.
pub fn checksum(bytes: &[u8]) -> Option<u64> {
    if bytes.len() % 8 != 0 {
        return None;
    }
    let skip = (CHECKSUM_OFFSET / 8) as u64;
    let mut sum = 0u64;
    for (i, w) in bytes.chunks_exact(8).enumerate() {
        let i = i as u64;
        if i != skip {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            sum = sum.wrapping_add(fmix64(u64::from_le_bytes(word) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        }
    }
    Some(sum)
}

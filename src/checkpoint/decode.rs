//! The decoder: full validation of an untrusted checkpoint buffer.
//!
//! Order of checks: length and magic, version; then a walk over the bucket
//! headers that bounds every announced length by the bytes actually present
//! (checked arithmetic; nothing is allocated from an untrusted length before
//! it has been matched against the buffer); then trailing bytes and the
//! checksum; then the fields (reserved bytes, world and rank, dtype codes,
//! counters, budget flag and state, padding, finite values), while the
//! values are copied out.

use super::encode::{check_budget, check_counters, check_world_rank};
use super::{
    BUCKET_HEADER_BYTES, BucketState, BudgetState, CHECKSUM_OFFSET, Checkpoint, FORMAT_VERSION, HEADER_BYTES, MAGIC,
    checksum,
};
use crate::config::WireDtype;
use crate::error::CheckpointError;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The first non-zero byte of `b[range]`, as an error naming its offset.
fn zeros(b: &[u8], from: usize, to: usize) -> Result<(), CheckpointError> {
    match b[from..to].iter().position(|&x| x != 0) {
        Some(i) => Err(CheckpointError::NonZeroReserved { offset: (from + i) as u64 }),
        None => Ok(()),
    }
}

/// Bytes of a bucket record for an untrusted `n`, in u64 (saturating: a
/// saturated value is larger than any buffer).
fn record_bytes(n: u64) -> u64 {
    let values = n.saturating_mul(4).saturating_add(7) & !7;
    (BUCKET_HEADER_BYTES as u64).saturating_add(values)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let available = bytes.len() as u64;
    if bytes.len() < HEADER_BYTES {
        return Err(CheckpointError::Truncated { needed: HEADER_BYTES as u64, available });
    }
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != MAGIC {
        return Err(CheckpointError::BadMagic { found });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let count = u64_at(bytes, 16);
    // Every bucket takes at least its header: bounds the count (and the
    // capacity reserved for it below) by the bytes present.
    let least = (HEADER_BYTES as u64).saturating_add(count.saturating_mul(BUCKET_HEADER_BYTES as u64));
    if least > available {
        return Err(CheckpointError::Truncated { needed: least, available });
    }

    // Structure walk: each record's length from its `n`, bounded by what is present.
    let mut at = HEADER_BYTES as u64;
    for _ in 0..count {
        let header_end = at + BUCKET_HEADER_BYTES as u64;
        if header_end > available {
            return Err(CheckpointError::Truncated { needed: header_end, available });
        }
        let n = u64_at(bytes, at as usize);
        let end = at.saturating_add(record_bytes(n));
        if end > available {
            return Err(CheckpointError::Truncated { needed: end, available });
        }
        at = end;
    }
    if at != available {
        return Err(CheckpointError::TrailingBytes { expected: at, found: available });
    }
    // Every record is a multiple of 8 bytes, so the length is too.
    let actual = checksum(bytes).unwrap_or(0);
    let expected = u64_at(bytes, CHECKSUM_OFFSET);
    if actual != expected {
        return Err(CheckpointError::ChecksumMismatch { expected, actual });
    }

    zeros(bytes, 6, 8)?;
    let world = u32_at(bytes, 8);
    let rank = u32_at(bytes, 12);
    check_world_rank(world, rank)?;
    // Bounded: `count` buckets of at least 40 bytes each are present.
    let mut buckets = Vec::with_capacity(count as usize);
    let mut at = HEADER_BYTES;
    for b in 0..count as usize {
        let n = u64_at(bytes, at);
        let code = bytes[at + 8];
        let dtype = WireDtype::from_code(code).ok_or(CheckpointError::InvalidDtype { bucket: b, code })?;
        let flag = bytes[at + 9];
        zeros(bytes, at + 10, at + 16)?;
        let config_fingerprint = u64_at(bytes, at + 16);
        let steps = u64_at(bytes, at + 24);
        let since_sync = u64_at(bytes, at + 32);
        check_counters(b, steps, since_sync)?;
        let budget = match flag {
            0 => {
                zeros(bytes, at + 40, at + 64)?;
                None
            }
            1 => {
                let budget = BudgetState {
                    tau: f64::from_bits(u64_at(bytes, at + 40)),
                    mean_bytes: f64::from_bits(u64_at(bytes, at + 48)),
                    syncs: u64_at(bytes, at + 56),
                };
                check_budget(b, &budget)?;
                Some(budget)
            }
            _ => {
                return Err(CheckpointError::InvalidField {
                    field: "budget",
                    reason: format!("bucket {b}: budget flag must be 0 or 1, got {flag}"),
                });
            }
        };
        // Bounded: the walk above found `4 * n` value bytes present.
        let values_at = at + BUCKET_HEADER_BYTES;
        let values_end = values_at + 4 * n as usize;
        let record_end = at + record_bytes(n) as usize;
        zeros(bytes, values_end, record_end)?;
        let mut accumulator = Vec::with_capacity(n as usize);
        for (i, w) in bytes[values_at..values_end].chunks_exact(4).enumerate() {
            let v = f32::from_bits(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            if !v.is_finite() {
                return Err(CheckpointError::NonFinite { bucket: b, index: i as u64 });
            }
            accumulator.push(v);
        }
        buckets.push(BucketState { n, dtype, config_fingerprint, steps, since_sync, accumulator, budget });
        at = record_end;
    }
    Ok(Checkpoint { world, rank, buckets })
}

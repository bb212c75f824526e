//! The encoder: checks that the state could have come from an engine, then
//! appends the one canonical encoding of docs/checkpoint-format.md.

use super::{BudgetState, CHECKSUM_OFFSET, Checkpoint, FORMAT_VERSION, HEADER_BYTES, MAGIC, bucket_bytes, checksum};
use crate::error::CheckpointError;

/// Checks every invariant [`super::Checkpoint::decode`] checks on the fields,
/// and returns the total encoded length.
fn check(c: &Checkpoint) -> Result<usize, CheckpointError> {
    check_world_rank(c.world, c.rank)?;
    let mut total = HEADER_BYTES;
    for (b, bucket) in c.buckets.iter().enumerate() {
        let len = bucket.accumulator.len();
        if u64::try_from(len).ok() != Some(bucket.n) {
            return Err(CheckpointError::AccumulatorLength { bucket: b, n: bucket.n, len: len as u64 });
        }
        check_counters(b, bucket.steps, bucket.since_sync)?;
        if let Some(budget) = &bucket.budget {
            check_budget(b, budget)?;
        }
        if let Some(i) = bucket.accumulator.iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::NonFinite { bucket: b, index: i as u64 });
        }
        // `n` is the length of a vector in memory, so this cannot overflow
        // unless the whole checkpoint is larger than the address space.
        total = bucket_bytes(bucket.n)
            .and_then(|r| total.checked_add(r))
            .ok_or(CheckpointError::TooLarge { bytes: u64::MAX })?;
    }
    Ok(total)
}

/// `world >= 1` and `rank < world`.
pub(super) fn check_world_rank(world: u32, rank: u32) -> Result<(), CheckpointError> {
    if world == 0 {
        return Err(CheckpointError::InvalidField { field: "world", reason: "must be at least 1".into() });
    }
    if rank >= world {
        return Err(CheckpointError::InvalidField {
            field: "rank",
            reason: format!("rank {rank} is not below world {world}"),
        });
    }
    Ok(())
}

/// `since_sync <= steps` for bucket `b`.
pub(super) fn check_counters(b: usize, steps: u64, since_sync: u64) -> Result<(), CheckpointError> {
    if since_sync > steps {
        return Err(CheckpointError::InvalidField {
            field: "since_sync",
            reason: format!("bucket {b}: since_sync {since_sync} exceeds steps {steps}"),
        });
    }
    Ok(())
}

/// A budget state an engine can hold: `tau` finite and > 0, `mean_bytes`
/// finite and >= 0, and `mean_bytes == 0` exactly when `syncs == 0`.
pub(super) fn check_budget(b: usize, budget: &BudgetState) -> Result<(), CheckpointError> {
    let BudgetState { tau, mean_bytes, syncs } = *budget;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(CheckpointError::InvalidField {
            field: "budget.tau",
            reason: format!("bucket {b}: must be finite and > 0, got {tau}"),
        });
    }
    if !(mean_bytes.is_finite() && mean_bytes >= 0.0) || (mean_bytes == 0.0) != (syncs == 0) {
        return Err(CheckpointError::InvalidField {
            field: "budget.mean_bytes",
            reason: format!(
                "bucket {b}: must be finite, > 0 after a sync and 0 before one, got {mean_bytes} after {syncs} syncs"
            ),
        });
    }
    Ok(())
}

pub(super) fn encode(c: &Checkpoint, out: &mut Vec<u8>) -> Result<(), CheckpointError> {
    let total = check(c)?;
    out.try_reserve_exact(total).map_err(|_| CheckpointError::TooLarge { bytes: total as u64 })?;
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&c.world.to_le_bytes());
    out.extend_from_slice(&c.rank.to_le_bytes());
    out.extend_from_slice(&(c.buckets.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0; 8]); // checksum, written last
    for bucket in &c.buckets {
        out.extend_from_slice(&bucket.n.to_le_bytes());
        out.push(bucket.dtype.code());
        out.push(u8::from(bucket.budget.is_some()));
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&bucket.config_fingerprint.to_le_bytes());
        out.extend_from_slice(&bucket.steps.to_le_bytes());
        out.extend_from_slice(&bucket.since_sync.to_le_bytes());
        let budget = bucket.budget.unwrap_or(BudgetState { tau: 0.0, mean_bytes: 0.0, syncs: 0 });
        out.extend_from_slice(&budget.tau.to_bits().to_le_bytes());
        out.extend_from_slice(&budget.mean_bytes.to_bits().to_le_bytes());
        out.extend_from_slice(&budget.syncs.to_le_bytes());
        for v in &bucket.accumulator {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        if bucket.accumulator.len() % 2 == 1 {
            out.extend_from_slice(&[0; 4]);
        }
    }
    let body = &mut out[start..];
    // Always Some: every record is a multiple of 8 bytes.
    let sum = checksum(body).unwrap_or(0);
    body[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

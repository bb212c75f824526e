//! Saving and restoring an engine's whole state: every bucket's committed
//! accumulator (the error-feedback residual, which a restart must not lose)
//! and counters (the warm-up ramp and forced-sync clock), in the format of
//! `docs/checkpoint-format.md` ([`crate::checkpoint`]).

use super::group::SyncGroup;
use super::single::SparseSync;
use crate::backend::Backend;
use crate::checkpoint::{BucketState, Checkpoint};
use crate::collective::Collective;
use crate::error::{CheckpointError, Result};

impl<B: Backend, C: Collective> SyncGroup<B, C> {
    /// This rank's whole sync state as checkpoint bytes: for every bucket
    /// its committed accumulator, step and since-sync counters, length,
    /// dtype and a fingerprint of its configuration, with the world size and
    /// rank. Reads each accumulator back from the device once. Save the
    /// parameters alongside (they are the caller's): restoring both at the
    /// same step continues bitwise as if the job had never stopped.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                let mut accumulator = vec![0.0; b.n];
                self.backend.read_accumulator(&b.state, &mut accumulator)?;
                Ok(BucketState {
                    n: b.n as u64,
                    dtype: b.config.wire_dtype,
                    config_fingerprint: b.config.fingerprint(),
                    steps: b.t,
                    since_sync: b.since,
                    accumulator,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let checkpoint =
            Checkpoint { world: self.collective.world_size() as u32, rank: self.collective.rank() as u32, buckets };
        let mut out = Vec::with_capacity(checkpoint.encoded_len());
        checkpoint.encode(&mut out)?;
        Ok(out)
    }

    /// Restores [`SyncGroup::checkpoint`] bytes into this group, which must
    /// have the same world size, rank and buckets (lengths, dtypes,
    /// configurations) as the one that saved them.
    ///
    /// The bytes are untrusted: corrupt or truncated bytes, and a checkpoint
    /// of another shape or configuration, are a [`CheckpointError`] and
    /// change nothing. Only then are the accumulators written; should the
    /// backend fail while writing them, the group is marked diverged (every
    /// step fails) until a restore succeeds. A successful restore clears a
    /// diverged mark.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let saved = Checkpoint::decode(bytes)?;
        let (world, rank) = (self.collective.world_size(), self.collective.rank());
        if saved.world as usize != world {
            return Err(CheckpointError::WorldMismatch { expected: world as u32, found: saved.world }.into());
        }
        if saved.rank as usize != rank {
            return Err(CheckpointError::RankMismatch { expected: rank as u32, found: saved.rank }.into());
        }
        if saved.buckets.len() != self.buckets.len() {
            let (expected, found) = (self.buckets.len(), saved.buckets.len());
            return Err(CheckpointError::BucketCountMismatch { expected, found }.into());
        }
        for (b, (bucket, s)) in self.buckets.iter().zip(&saved.buckets).enumerate() {
            if s.n != bucket.n as u64 {
                return Err(CheckpointError::LengthMismatch { bucket: b, expected: bucket.n as u64, found: s.n }.into());
            }
            if s.dtype != bucket.config.wire_dtype {
                let expected = bucket.config.wire_dtype;
                return Err(CheckpointError::DtypeMismatch { bucket: b, expected, found: s.dtype }.into());
            }
            let fingerprint = bucket.config.fingerprint();
            if s.config_fingerprint != fingerprint {
                let found = s.config_fingerprint;
                return Err(CheckpointError::ConfigMismatch { bucket: b, expected: fingerprint, found }.into());
            }
        }
        for (bucket, s) in self.buckets.iter_mut().zip(saved.buckets) {
            if let Err(e) = self.backend.write_accumulator(&mut bucket.state, &s.accumulator) {
                self.diverged = true;
                return Err(e);
            }
            bucket.t = s.steps;
            bucket.since = s.since_sync;
        }
        self.diverged = false;
        Ok(())
    }
}

impl<B: Backend, C: Collective> SparseSync<B, C> {
    /// This engine's whole state as checkpoint bytes (see
    /// [`SyncGroup::checkpoint`]).
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        self.as_group().checkpoint()
    }

    /// Restores [`SparseSync::checkpoint`] bytes (see [`SyncGroup::restore`]).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.as_group_mut().restore(bytes)
    }
}

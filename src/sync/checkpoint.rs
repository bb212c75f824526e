//! Saving and restoring an engine's whole state: every bucket's committed
//! accumulator (the error-feedback residual, which a restart must not lose),
//! counters (the warm-up ramp and forced-sync clock) and budget controller
//! (the steered threshold), in the format of
//! `docs/checkpoint-format.md` ([`crate::checkpoint`]).

use super::bucket::Bucket;
use super::budget::BudgetController;
use super::group::SyncGroup;
use super::single::SparseSync;
use crate::backend::Backend;
use crate::checkpoint::{BucketState, BudgetState, Checkpoint};
use crate::collective::Collective;
use crate::error::{CheckpointError, Error, Result};

impl<B: Backend, C: Collective> SyncGroup<B, C> {
    /// This rank's whole sync state as checkpoint bytes: for every bucket
    /// its committed accumulator, step and since-sync counters, budget
    /// controller state (steered threshold, bytes mean), length, dtype and a
    /// fingerprint of its configuration, with the world size and rank. Reads each accumulator back from the device once. Save the
    /// parameters alongside (they are the caller's): restoring both at the
    /// same step continues bitwise as if the job had never stopped.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                let mut accumulator = vec![0.0; b.n];
                self.backend.read_accumulator(&b.state, &mut accumulator)?;
                // A sync whose deferred verdict is invalid did not happen:
                // save the counters the next step will restore.
                let (since, budget) = match b.retraction.map(|r| (r, self.backend.deferred_verdict(&b.state))) {
                    Some((r, Err(Error::InvalidPeerBuffer { .. }))) => (r.since, r.budget),
                    Some((_, Err(e))) => return Err(e),
                    _ => (b.since, b.budget),
                };
                Ok(BucketState {
                    n: b.n as u64,
                    dtype: b.config.wire_dtype,
                    config_fingerprint: b.config.fingerprint(),
                    steps: b.t,
                    since_sync: since,
                    accumulator,
                    budget: budget.map(|c| BudgetState { tau: c.tau, mean_bytes: c.mean_bytes, syncs: c.syncs }),
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
    /// change nothing; so does a budget state that this bucket's
    /// configuration could not have produced (present without a budget or
    /// missing with one, a threshold outside `[min_threshold,
    /// max_threshold]`, or other than `threshold` before the end of
    /// warm-up), an [`CheckpointError::InvalidField`]. Only then are the
    /// accumulators written; should the
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
            check_budget_fits(b, bucket, s)?;
        }
        for (bucket, s) in self.buckets.iter_mut().zip(saved.buckets) {
            if let Err(e) = self.backend.write_accumulator(&mut bucket.state, &s.accumulator) {
                self.diverged = true;
                return Err(e);
            }
            bucket.t = s.steps;
            bucket.since = s.since_sync;
            bucket.retraction = None;
            bucket.budget = s.budget.map(|c| BudgetController { tau: c.tau, mean_bytes: c.mean_bytes, syncs: c.syncs });
        }
        self.diverged = false;
        Ok(())
    }
}

/// Whether a decoded (so already range-checked) budget state is one that
/// `bucket`'s configuration can have produced by step `saved.steps`.
fn check_budget_fits<S>(b: usize, bucket: &Bucket<S>, saved: &BucketState) -> Result<()> {
    let config = &bucket.config;
    let invalid = |field, reason: String| Err(CheckpointError::InvalidField { field, reason }.into());
    match (&config.budget, &saved.budget) {
        (None, None) => Ok(()),
        (Some(_), None) => {
            invalid("budget", format!("bucket {b}: the configuration has a budget, the checkpoint none"))
        }
        (None, Some(_)) => {
            invalid("budget", format!("bucket {b}: the checkpoint has a budget, the configuration none"))
        }
        (Some(_), Some(state)) => {
            let tau = state.tau;
            if !(config.min_threshold..=config.max_threshold).contains(&tau) {
                let (lo, hi) = (config.min_threshold, config.max_threshold);
                return invalid("budget.tau", format!("bucket {b}: {tau} is outside [{lo}, {hi}]"));
            }
            // The first update follows step `warmup_steps`.
            if saved.steps < config.warmup_steps && tau.to_bits() != config.threshold.to_bits() {
                let steps = saved.steps;
                return invalid(
                    "budget.tau",
                    format!("bucket {b}: {tau} differs from threshold at step {steps}, before the end of warm-up"),
                );
            }
            Ok(())
        }
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

//! [`SparseSync`]: one vector's engine, a [`SyncGroup`] of one bucket.

use super::group::{BucketStep, SyncGroup};
use super::report::StepReport;
use crate::backend::Backend;
use crate::collective::Collective;
use crate::config::SyncConfig;
use crate::error::Result;

/// One rank's sync engine for one vector. Owns the backend state
/// (accumulator and workspaces, resident on the device) and holds the
/// backend and the collective: pass `&backend` / `Arc<backend>` to share one
/// backend between engines, and use a [`SyncGroup`] for a model's buckets
/// so that they share one collective and one vote per step.
///
/// Every rank of a group must call [`SparseSync::step`] the same number of
/// times; the collective calls inside are the same on every rank whatever the
/// local outcome, so no rank waits on a collective another rank skipped.
pub struct SparseSync<B: Backend, C: Collective> {
    group: SyncGroup<B, C>,
}

impl<B: Backend, C: Collective> SparseSync<B, C> {
    /// Creates the engine for vectors of `n` elements. Validates `config` and
    /// allocates all device state up front.
    pub fn new(backend: B, collective: C, n: usize, config: SyncConfig) -> Result<Self> {
        let mut group = SyncGroup::new(backend, collective)?;
        group.add_bucket(n, config)?;
        Ok(SparseSync { group })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        self.group.backend()
    }
    /// The collective.
    pub fn collective(&self) -> &C {
        self.group.collective()
    }
    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        self.group.config(0).expect("a SparseSync has one bucket")
    }
    /// Elements per vector.
    pub fn len(&self) -> usize {
        self.group.bucket_len(0).unwrap_or(0)
    }
    /// Always false: a `SparseSync` has at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Steps completed.
    pub fn steps(&self) -> u64 {
        self.group.steps()
    }
    /// Steps since the last sync.
    pub fn steps_since_sync(&self) -> u64 {
        self.group.steps_since_sync(0).unwrap_or(0)
    }
    /// The threshold the next step tests against (see
    /// [`SyncGroup::next_threshold`]).
    pub fn next_threshold(&self) -> f64 {
        self.group.next_threshold(0).unwrap_or(0.0)
    }
    /// Copies the committed accumulator to `dst`.
    pub fn read_accumulator(&self, dst: &mut [f32]) -> Result<()> {
        self.group.read_accumulator(0, dst)
    }
    /// The engine as a one-bucket group (checkpoints, divergence).
    pub fn as_group(&self) -> &SyncGroup<B, C> {
        &self.group
    }
    /// The engine as a one-bucket group, mutably (restore).
    pub fn as_group_mut(&mut self) -> &mut SyncGroup<B, C> {
        &mut self.group
    }

    /// Runs one step of the spec on this rank: accumulate `delta`, test
    /// significance, vote, and if the group syncs, pack, exchange and apply to
    /// `params`. Both are borrowed: on the CPU any `&[f32]` / `&mut [f32]`
    /// the caller owns, with no copy.
    ///
    /// Errors are [`SyncGroup::step`]'s, the same on every rank for the same
    /// step. In short: a failure before the vote on any rank (non-finite
    /// input, a wrong length, a backend failure) changes nothing anywhere
    /// and the next step runs normally; a pack failure, an over-long
    /// announcement or an invalid peer buffer keep this step's accumulation
    /// (nothing is lost, it is sent later), leave `params` untouched and
    /// count the step as taken without a sync. An exchange in device memory
    /// on the CUDA backend is validated asynchronously: an invalid buffer
    /// there leaves `params` untouched as well, and is reported by the next
    /// step (or [`SparseSync::settle`]) instead.
    pub fn step(&mut self, delta: &B::Vector, params: &mut B::Vector) -> Result<StepReport> {
        self.group.step(&mut [BucketStep { delta, params }])?;
        Ok(self.group.reports()[0])
    }

    /// The verdict of the last sync when its exchange was validated
    /// asynchronously (see [`SyncGroup::settle`]); `Ok` otherwise.
    pub fn settle(&mut self) -> Result<()> {
        self.group.settle()
    }
}

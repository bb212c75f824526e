//! [`SharedCollective`]: one communicator behind several engines.

use super::{Collective, DeviceBytes, DeviceMemory, Gathered};
use crate::error::Result;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A cloneable handle to one collective, so that several engines (one
/// [`crate::SparseSync`] per bucket, stepped one after another as a DDP
/// communication hook sees buckets) use one communicator instead of one
/// each. Each call locks the collective for its duration.
///
/// The engines must step in the same order on every rank, as any two uses
/// of one communicator must. To step buckets together with one vote, use a
/// [`crate::SyncGroup`] instead.
pub struct SharedCollective<C> {
    inner: Arc<Mutex<C>>,
    rank: usize,
    world: usize,
    timeout: Duration,
}

impl<C: Collective> SharedCollective<C> {
    /// Shares `collective`.
    pub fn new(collective: C) -> Self {
        let (rank, world, timeout) = (collective.rank(), collective.world_size(), collective.timeout());
        SharedCollective { inner: Arc::new(Mutex::new(collective)), rank, world, timeout }
    }

    /// The collective, locked; a panic in another holder does not poison it
    /// for this one (every call leaves the collective consistent or broken,
    /// never half-updated).
    fn lock(&self) -> MutexGuard<'_, C> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C> Clone for SharedCollective<C> {
    fn clone(&self) -> Self {
        SharedCollective { inner: Arc::clone(&self.inner), rank: self.rank, world: self.world, timeout: self.timeout }
    }
}

impl<C: Collective> Collective for SharedCollective<C> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()> {
        self.lock().all_reduce_max(values)
    }
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        self.lock().all_gather_u64(value, out)
    }
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        self.lock().all_gather_bytes(send, lens, out)
    }
    fn reserve_payload(&mut self, max_bytes_per_rank: usize) {
        self.lock().reserve_payload(max_bytes_per_rank);
    }
    fn device_memory(&self) -> Option<DeviceMemory> {
        self.lock().device_memory()
    }
    unsafe fn all_gather_device(&mut self, send: DeviceBytes, lens: &[u64], recv: DeviceBytes) -> Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.lock().all_gather_device(send, lens, recv) }
    }
    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.lock().all_reduce_max_device(words) }
    }
    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> Result<()> {
        // SAFETY: the caller's contract is the inner call's.
        unsafe { self.lock().all_gather_u64_device(send, recv) }
    }
}

//! [`HostStaged`]: a collective whose exchanges always go through the host.

use super::{Collective, Gathered};
use crate::error::Result;
use std::time::Duration;

/// Forwards every operation to `inner` but reports no device memory, so an
/// engine stages its exchanges through the host (the backend's
/// `select_pack` bytes, uploaded again by `apply`) even where `inner` and
/// the backend could exchange in device memory
/// ([`crate::collective::device`]). For comparing the two paths, or for a
/// collective whose device exchange must not be used.
#[derive(Debug)]
pub struct HostStaged<C> {
    inner: C,
}

impl<C: Collective> HostStaged<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        HostStaged { inner }
    }

    /// Gives `inner` back.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C: Collective> Collective for HostStaged<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()> {
        self.inner.all_reduce_max(values)
    }
    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        self.inner.all_gather_u64(value, out)
    }
    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        self.inner.all_gather_bytes(send, lens, out)
    }
    fn reserve_payload(&mut self, max_bytes_per_rank: usize) {
        self.inner.reserve_payload(max_bytes_per_rank);
    }
}

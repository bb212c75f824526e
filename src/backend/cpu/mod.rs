//! The multi-threaded CPU backend: host memory is its device.
//!
//! Every pass is a rayon loop over fixed-size blocks of the index range
//! (`fused::BLOCK` elements for reductions, wire chunks of
//! [`CHUNK_ELEMS`](crate::wire::layout::CHUNK_ELEMS) for packing and applying).
//! Floating-point partial sums are kept per block and combined in block order,
//! and integer counts are exact, so every result is the same bits on every run
//! and for any thread count.
//!
//! Files: `state` (per-instance buffers, all allocated in `create_state`),
//! `fused` (operation 1 and the accumulator statistics), `fused_x86` (its
//! inner loop in AVX2, same bits), `cache` (the last-level cache size),
//! `select` (the radix cut search of docs/selection.md), `mark` (its one
//! pass over the accumulator: the selection bitmap, the selected values
//! captured on the way, the candidates of the deeper levels), `pack` (the
//! wire-format writer: layout, header, checksum) and `pack_chunks` (each
//! chunk's index section and values, from the captured values, so that the
//! accumulator is read once per sync), `apply` (operation 3, a per-chunk
//! merge of the rank buffers).

mod apply;
mod cache;
pub(super) mod fused;
#[cfg(target_arch = "x86_64")]
mod fused_x86;
mod mark;
mod pack;
mod pack_chunks;
mod select;
mod state;
mod tables;
#[cfg(test)]
mod tests;

pub use cache::last_level_cache_bytes;
pub use state::CpuState;

use crate::backend::{Backend, StepStatus};
use crate::collective::Gathered;
use crate::config::SyncConfig;
use crate::error::{BackendError, Error, Result};

/// The multi-threaded CPU backend. Buffers are plain `Vec<f32>` in host memory.
///
/// Results do not depend on the number of threads: a backend built with
/// [`CpuBackend::with_threads`]`(1)` produces the same status bits and packed
/// bytes as one with any other count.
pub struct CpuBackend {
    /// `None`: run on rayon's global pool.
    pool: Option<rayon::ThreadPool>,
}

impl CpuBackend {
    /// A backend running on rayon's global thread pool.
    pub fn new() -> CpuBackend {
        CpuBackend { pool: None }
    }

    /// A backend with its own pool of `threads` worker threads (>= 1).
    /// Fails with [`Error::InvalidConfig`] for 0 threads and
    /// [`BackendError::Unavailable`] when the threads cannot be spawned.
    pub fn with_threads(threads: usize) -> Result<CpuBackend> {
        if threads == 0 {
            return Err(Error::InvalidConfig { field: "threads", reason: "must be >= 1".into() });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("chronos-cpu-{i}"))
            .build()
            .map_err(|e| BackendError::Unavailable { backend: "cpu", reason: e.to_string() })?;
        Ok(CpuBackend { pool: Some(pool) })
    }

    /// Worker threads this backend's passes run on.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `f` inside this backend's pool, so that its rayon loops use it.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}

impl Default for CpuBackend {
    /// Same as [`CpuBackend::new`].
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend").field("threads", &self.threads()).finish()
    }
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(Error::LengthMismatch { what, expected, actual });
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Vector = [f32];
    type Buffer = Vec<f32>;
    type State = CpuState;

    fn name(&self) -> String {
        let threads = self.threads();
        format!("cpu ({threads} thread{})", if threads == 1 { "" } else { "s" })
    }

    fn alloc(&self, n: usize) -> Result<Vec<f32>> {
        state::zeroed(0.0, n)
    }

    fn upload(&self, src: &[f32], dst: &mut [f32]) -> Result<()> {
        check_len("upload destination", src.len(), dst.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &[f32], dst: &mut [f32]) -> Result<()> {
        check_len("download destination", src.len(), dst.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn buffer_len(&self, buf: &[f32]) -> usize {
        buf.len()
    }

    fn create_state(&self, n: usize, config: &SyncConfig) -> Result<CpuState> {
        CpuState::new(n, config, self.threads())
    }

    fn read_accumulator(&self, state: &CpuState, dst: &mut [f32]) -> Result<()> {
        check_len("accumulator destination", state.n, dst.len())?;
        dst.copy_from_slice(&state.acc);
        Ok(())
    }

    fn write_accumulator(&self, state: &mut CpuState, src: &[f32]) -> Result<()> {
        check_len("accumulator source", state.n, src.len())?;
        state.acc.copy_from_slice(src);
        Ok(())
    }

    fn accumulate(&self, state: &mut CpuState, delta: &[f32], theta: &[f32], tau: f32) -> Result<StepStatus> {
        check_len("delta", state.n, delta.len())?;
        check_len("theta", state.n, theta.len())?;
        Ok(self.run(|| fused::accumulate(state, delta, theta, tau)))
    }

    fn commit_accumulate(&self, state: &mut CpuState) -> Result<()> {
        state.commit();
        Ok(())
    }

    fn select_pack<'s>(&self, state: &'s mut CpuState) -> Result<&'s [u8]> {
        let len = self.run(|| pack::select_pack(state));
        Ok(&state.packed[..len])
    }

    fn apply(
        &self,
        state: &mut CpuState,
        theta: &mut [f32],
        gathered: &Gathered,
        own_rank: usize,
        weight: f32,
    ) -> Result<()> {
        check_len("theta", state.n, theta.len())?;
        self.run(|| apply::apply(state, theta, gathered, own_rank, weight))
    }
}

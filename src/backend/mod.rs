//! The compute backends: the spec's three device operations behind one trait.
//!
//! A backend owns device memory. [`Backend::Buffer`] is a dense `f32` vector on
//! the device (parameters and updates live there across steps; nothing is
//! re-uploaded per step). [`Backend::State`] is one [`crate::SparseSync`]'s
//! device state: the double-buffered accumulator, selection workspaces, the
//! packed staging buffer and the status word. After the first step no
//! operation allocates, and the only per-step readback is the [`StepStatus`].
//!
//! One folder per backend: `cpu` (always built), `wgpu` (feature `wgpu`),
//! `cuda` (feature `cuda`). The generic conformance suite in
//! `tests/integration/conformance` holds every implementation to the same f64
//! reference and the same packed bytes.

pub mod cpu;
#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
pub mod cuda;
pub mod status;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use cpu::CpuBackend;
pub use status::StepStatus;

use crate::collective::Gathered;
use crate::config::SyncConfig;
use crate::error::Result;

/// The three device operations of one sync step, plus buffer management.
///
/// Call order per step (driven by [`crate::SparseSync`]):
/// `accumulate` → (vote) → `commit_accumulate` → [`select_pack` → (exchange) →
/// `apply`]. Until `commit_accumulate`, the accumulator is untouched, so an
/// erroring step leaves the state exactly as it was.
///
/// [`select_pack`]: Backend::select_pack
pub trait Backend: Send + Sync {
    /// A dense `f32` vector resident on this backend's device.
    type Buffer: Send;
    /// Per-instance device state (accumulators, workspaces, staging).
    type State: Send;

    /// Human-readable name, including the adapter/device when there is one.
    fn name(&self) -> String;

    /// A zero-filled buffer of `n` elements.
    fn alloc(&self, n: usize) -> Result<Self::Buffer>;
    /// Copies `src` into `dst` (same length, else [`crate::Error::LengthMismatch`]).
    fn upload(&self, src: &[f32], dst: &mut Self::Buffer) -> Result<()>;
    /// Copies `src` into `dst` (same length, else [`crate::Error::LengthMismatch`]).
    fn download(&self, src: &Self::Buffer, dst: &mut [f32]) -> Result<()>;
    /// Elements in `buf`.
    fn buffer_len(&self, buf: &Self::Buffer) -> usize;

    /// Allocates the state for vectors of `n` elements under `config`
    /// (already validated). The accumulator starts at zero.
    fn create_state(&self, n: usize, config: &SyncConfig) -> Result<Self::State>;
    /// Copies the committed accumulator to the host (tests, checkpoints).
    fn read_accumulator(&self, state: &Self::State, dst: &mut [f32]) -> Result<()>;

    /// Operation 1, fused: `acc' = acc + delta` into the spare accumulator, and
    /// in the same pass `sum(acc'^2)`, `sum(theta^2)`, the non-finite count of
    /// `acc'` and `theta` (the committed accumulator is always finite, so a
    /// non-finite `acc'` means a non-finite `delta` or an overflow of the
    /// sum: either way the step must not commit), the level-1 selection
    /// histogram of `acc'`
    /// (docs/selection.md) and the threshold test `s > tau`. Deterministic:
    /// the same inputs give the same status bits on every run. The committed
    /// accumulator is unchanged.
    fn accumulate(
        &self,
        state: &mut Self::State,
        delta: &Self::Buffer,
        theta: &Self::Buffer,
        tau: f32,
    ) -> Result<StepStatus>;

    /// Makes the accumulator written by the last `accumulate` the committed one.
    fn commit_accumulate(&self, state: &mut Self::State) -> Result<()>;

    /// Operation 2: selects entries of the committed accumulator by the
    /// configured rule (docs/selection.md), converts them to the wire dtype and
    /// writes one packed buffer (docs/wire-format.md), returned as host bytes.
    /// The accumulator is not modified (error feedback happens in `apply`, once
    /// the exchange succeeded).
    fn select_pack<'s>(&self, state: &'s mut Self::State) -> Result<&'s [u8]>;

    /// Operation 3: `theta_i += weight * sum_r v_r,i` over the validated rank
    /// buffers in `gathered`, summed in rank order 0..W-1 in f32 starting from
    /// +0.0, then one f32 multiply and one f32 add (no fused multiply-add), for
    /// every index present in any buffer. Then error feedback on this rank's
    /// own entries: `acc_i -= v_own,i` when `config.error_feedback`, else the
    /// whole accumulator is zeroed.
    fn apply(
        &self,
        state: &mut Self::State,
        theta: &mut Self::Buffer,
        gathered: &Gathered,
        own_rank: usize,
        weight: f32,
    ) -> Result<()>;
}

//! The compute backends: the spec's three device operations behind one trait.
//!
//! A backend owns device memory. [`Backend::Vector`] is a dense `f32` vector
//! on the device as a step borrows it (`[f32]` on the CPU: the caller's own
//! memory), [`Backend::Buffer`] an owned one; parameters and updates live
//! there across steps and the engine never re-uploads them.
//! [`Backend::State`] is one bucket's device state: the double-buffered accumulator, selection workspaces, the
//! packed staging buffer and the status word.
//!
//! Host traffic and allocation differ by backend (each backend's module doc
//! gives its counts). The CPU backend works in host memory: nothing is
//! copied, and after warm-up no operation allocates (`tests/alloc.rs` checks
//! it). On wgpu and CUDA, `accumulate` reads back only a small block (the
//! 32-byte [`StepStatus`]; on CUDA 64 bytes with the pack info of a
//! speculative pack, and the verdicts of the last device exchange); on a
//! syncing step staged through the host `select_pack` also reads the packed
//! bytes back and `validate_peers` uploads every rank's gathered bytes (and
//! checks them on the device), while with a collective of the backend's
//! device memory the CUDA backend's packed bytes never leave the device
//! ([`crate::collective::device`]) and a syncing step is that one readback.
//! Their host side allocates nothing per step after warm-up either
//! (`tests/alloc.rs` runs the CUDA emulation and wgpu too; wgpu's own
//! allocations inside its API calls are counted apart). Both count their host traffic, waits and object creations
//! ([`TransferCounts`]; `tests/integration/transfer.rs` asserts the
//! per-step budgets).
//!
//! One folder per backend: `cpu` (always built), `wgpu` (feature `wgpu`),
//! `cuda` (feature `cuda`). The generic conformance suite in
//! `tests/integration/conformance` holds every implementation to the same f64
//! reference and the same packed bytes.

pub mod cpu;
#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
pub mod cuda;
pub mod status;
pub mod transfer;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use cpu::CpuBackend;
pub use status::StepStatus;
pub use transfer::TransferCounts;

use crate::collective::{DeviceBytes, DeviceLens, DeviceMemory, DeviceVote, Gathered, PackedOnDevice};
use crate::config::{SyncConfig, WireDtype};
use crate::error::Result;
use crate::wire::Validator;
use std::borrow::BorrowMut;
use std::sync::Arc;

/// The body of a forwarding `Backend` impl: every method calls the same one
/// on `**self`.
macro_rules! forward_backend {
    () => {
        fn name(&self) -> String {
            (**self).name()
        }
        fn alloc(&self, n: usize) -> Result<Self::Buffer> {
            (**self).alloc(n)
        }
        fn upload(&self, src: &[f32], dst: &mut Self::Vector) -> Result<()> {
            (**self).upload(src, dst)
        }
        fn download(&self, src: &Self::Vector, dst: &mut [f32]) -> Result<()> {
            (**self).download(src, dst)
        }
        fn buffer_len(&self, buf: &Self::Vector) -> usize {
            (**self).buffer_len(buf)
        }
        fn create_state(&self, n: usize, config: &SyncConfig) -> Result<Self::State> {
            (**self).create_state(n, config)
        }
        fn read_accumulator(&self, state: &Self::State, dst: &mut [f32]) -> Result<()> {
            (**self).read_accumulator(state, dst)
        }
        fn write_accumulator(&self, state: &mut Self::State, src: &[f32]) -> Result<()> {
            (**self).write_accumulator(state, src)
        }
        fn accumulate(
            &self,
            state: &mut Self::State,
            delta: &Self::Vector,
            theta: &Self::Vector,
            tau: f32,
        ) -> Result<StepStatus> {
            (**self).accumulate(state, delta, theta, tau)
        }
        fn commit_accumulate(&self, state: &mut Self::State) -> Result<()> {
            (**self).commit_accumulate(state)
        }
        fn select_pack<'s>(&self, state: &'s mut Self::State) -> Result<&'s [u8]> {
            (**self).select_pack(state)
        }
        fn validate_peers(&self, state: &mut Self::State, gathered: &Gathered, host: HostPeerCheck<'_>) -> Result<()> {
            (**self).validate_peers(state, gathered, host)
        }
        fn device_memory(&self) -> Option<DeviceMemory> {
            (**self).device_memory()
        }
        fn pack_on_device(&self, state: &mut Self::State) -> Result<PackedOnDevice> {
            (**self).pack_on_device(state)
        }
        fn receive_on_device(&self, state: &mut Self::State, total: usize) -> Result<DeviceBytes> {
            (**self).receive_on_device(state, total)
        }
        fn deferred_verdict(&self, state: &Self::State) -> Result<()> {
            (**self).deferred_verdict(state)
        }
        fn accumulate_and_vote(
            &self,
            state: &mut Self::State,
            step: Option<(&Self::Vector, &Self::Vector, f32)>,
            vote: DeviceVote,
        ) -> Result<DeviceBytes> {
            (**self).accumulate_and_vote(state, step, vote)
        }
        fn pack_after_device_vote(&self, state: &mut Self::State) -> Result<DeviceLens> {
            (**self).pack_after_device_vote(state)
        }
        fn read_device_vote(&self, state: &mut Self::State, vote: &mut [u32], lens: &mut [u64]) -> Result<StepStatus> {
            (**self).read_device_vote(state, vote, lens)
        }
        fn apply(
            &self,
            state: &mut Self::State,
            theta: &mut Self::Vector,
            gathered: &Gathered,
            own_rank: usize,
            weight: f32,
        ) -> Result<()> {
            (**self).apply(state, theta, gathered, own_rank, weight)
        }
    };
}

/// The three device operations of one sync step, plus buffer management.
///
/// Call order per step (driven by [`crate::SparseSync`] and
/// [`crate::SyncGroup`]): `accumulate` → (vote) → `commit_accumulate` →
/// [`select_pack` → (exchange) → `validate_peers` → `apply`]. Until
/// `commit_accumulate`, the accumulator is untouched, so an erroring step
/// leaves the state exactly as it was. With a collective of the backend's
/// device memory ([`crate::collective::device`]) the exchange is
/// `pack_on_device` → (exchange) → `receive_on_device`'s memory, and an
/// engine of one bucket replaces `accumulate` and the vote with
/// `accumulate_and_vote` → (vote) → `pack_after_device_vote` → (counts)
/// → `read_device_vote`.
///
/// One backend serves any number of engines: every operation takes `&self`,
/// and `&B` and `Arc<B>` are backends too, so the buckets of a model share one
/// device context (and its compiled kernels) instead of creating one each.
///
/// [`select_pack`]: Backend::select_pack
pub trait Backend: Send + Sync {
    /// A dense `f32` vector in this backend's memory, as a step reads and
    /// writes it: borrowed from its owner, never copied by the engine. On the
    /// CPU it is `[f32]`, so a step runs directly on a framework's tensor
    /// storage or an arena slice.
    type Vector: ?Sized;
    /// An owned vector from [`Backend::alloc`] (`Vec<f32>` on the CPU).
    type Buffer: Send + BorrowMut<Self::Vector>;
    /// Per-instance device state (accumulators, workspaces, staging).
    type State: Send;

    /// Human-readable name, including the adapter/device when there is one.
    fn name(&self) -> String;

    /// A zero-filled buffer of `n` elements.
    fn alloc(&self, n: usize) -> Result<Self::Buffer>;
    /// Copies `src` into `dst` (same length, else [`crate::Error::LengthMismatch`]).
    fn upload(&self, src: &[f32], dst: &mut Self::Vector) -> Result<()>;
    /// Copies `src` into `dst` (same length, else [`crate::Error::LengthMismatch`]).
    fn download(&self, src: &Self::Vector, dst: &mut [f32]) -> Result<()>;
    /// Elements in `buf`.
    fn buffer_len(&self, buf: &Self::Vector) -> usize;

    /// Allocates the state for vectors of `n` elements under `config`
    /// (already validated). The accumulator starts at zero.
    fn create_state(&self, n: usize, config: &SyncConfig) -> Result<Self::State>;
    /// Copies the committed accumulator to the host (tests, checkpoints).
    fn read_accumulator(&self, state: &Self::State, dst: &mut [f32]) -> Result<()>;
    /// Replaces the committed accumulator with `src` (restoring a
    /// checkpoint). `src` has the state's length and only finite values (the
    /// caller checks both); the spare accumulator and every workspace are
    /// rewritten by the next step, so nothing else needs restoring.
    fn write_accumulator(&self, state: &mut Self::State, src: &[f32]) -> Result<()>;

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
        delta: &Self::Vector,
        theta: &Self::Vector,
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

    /// The device memory this backend's state lives in, when a collective
    /// of the same memory can exchange its packed buffers there
    /// ([`crate::collective::device`]). `None`, the default: the exchange is
    /// staged through the host ([`Backend::select_pack`]'s bytes).
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }

    /// [`Backend::select_pack`], leaving the packed buffer in device memory
    /// (where it stays, unchanged, until the next pack on `state`) and
    /// returning where it is and its entry count. Default:
    /// [`crate::BackendError::Unsupported`].
    fn pack_on_device(&self, state: &mut Self::State) -> Result<PackedOnDevice> {
        let _ = state;
        Err(crate::BackendError::Unsupported { backend: "this backend", what: "packing in device memory".into() }
            .into())
    }

    /// Device memory of `state`, at least `total` bytes and disjoint from
    /// the packed buffer, into which a collective gathers every rank's
    /// packed bytes; [`Backend::validate_peers`] and [`Backend::apply`] then
    /// read them there, given a [`Gathered::set_on_device`] of the same
    /// lengths. Grows (once) when an exchange is larger than any before.
    /// Default: [`crate::BackendError::Unsupported`].
    fn receive_on_device(&self, state: &mut Self::State, total: usize) -> Result<DeviceBytes> {
        let _ = (state, total);
        Err(crate::BackendError::Unsupported { backend: "this backend", what: "receiving in device memory".into() }
            .into())
    }

    /// Checks every rank's buffer in `gathered` (structure, bounds, order,
    /// values, checksum, then `n` and dtype against `state`) before
    /// [`Backend::apply`] reads them. Returns the first failing rank, in rank
    /// order, as [`crate::Error::InvalidPeerBuffer`] carrying exactly the
    /// error of the host validator ([`crate::wire::Validator::validate`]) for
    /// its bytes; nothing in `state` that a step reads changes either way.
    ///
    /// The default runs `host`, the engine's host validator. A backend that
    /// checks on its device (CUDA: `kernels/validate.cu`) returns the same
    /// errors for the same bytes, and may keep what it uploaded (bytes and
    /// chunk descriptors) for an `apply` with the same `gathered` that
    /// follows.
    ///
    /// An exchange in device memory ([`Gathered::is_on_device`]) may be
    /// checked asynchronously: the backend returns `Ok` before its verdicts
    /// are on the host, the following [`Backend::apply`] then changes
    /// nothing (parameters or accumulator) unless every buffer was valid,
    /// and [`Backend::deferred_verdict`] returns the error. The CUDA
    /// backend does so, to read the verdicts with the next step's status.
    fn validate_peers(&self, state: &mut Self::State, gathered: &Gathered, host: HostPeerCheck<'_>) -> Result<()> {
        let _ = state;
        host.run(gathered)
    }

    /// The verdicts of the last exchange [`Backend::validate_peers`] checked
    /// asynchronously: the error it would have returned
    /// ([`crate::Error::InvalidPeerBuffer`] for the first invalid rank), or
    /// `Ok` when every buffer was valid or nothing was deferred (the
    /// default). The same for every rank of an exchange, which validate the
    /// same bytes. Reads the verdicts back unless an `accumulate` since has
    /// brought them with its status.
    fn deferred_verdict(&self, state: &Self::State) -> Result<()> {
        let _ = state;
        Ok(())
    }

    /// The first part of a step whose vote and count exchange stay in
    /// device memory (an engine of one bucket whose collective shares the
    /// backend's [`Backend::device_memory`]): with `step` (delta, theta,
    /// tau) the fused pass of [`Backend::accumulate`], reading nothing
    /// back; then this rank's vote words ([`DeviceVote`]: the bucket's
    /// word, then one failure word per rank) in device memory, returned for
    /// [`crate::collective::Collective::all_reduce_max_device`]. Without
    /// `step` (the host found a failure, `vote.code`) only the words. The
    /// committed accumulator is unchanged. Default:
    /// [`crate::BackendError::Unsupported`].
    fn accumulate_and_vote(
        &self,
        state: &mut Self::State,
        step: Option<(&Self::Vector, &Self::Vector, f32)>,
        vote: DeviceVote,
    ) -> Result<DeviceBytes> {
        let _ = (state, step, vote);
        Err(crate::BackendError::Unsupported { backend: "this backend", what: "voting in device memory".into() }.into())
    }

    /// After the reduced vote: select and pack the new accumulator when the
    /// vote, read on the device, says sync and no rank failed (else
    /// nothing), and return where its packed length is and where every
    /// rank's goes, for [`crate::collective::Collective::all_gather_u64_device`].
    /// Default: [`crate::BackendError::Unsupported`].
    fn pack_after_device_vote(&self, state: &mut Self::State) -> Result<DeviceLens> {
        let _ = state;
        Err(crate::BackendError::Unsupported { backend: "this backend", what: "packing after a device vote".into() }
            .into())
    }

    /// The one readback of such a step: the status of the fused pass, the
    /// reduced vote into `vote` (`1 + world` words) and every rank's packed
    /// length into `lens` (`world`; meaningful when the vote says sync),
    /// and the verdicts of an earlier device validation not read yet (for
    /// [`Backend::deferred_verdict`]). When the vote says sync the packed
    /// buffer is the one [`Backend::pack_on_device`] returns after
    /// [`Backend::commit_accumulate`]. Default:
    /// [`crate::BackendError::Unsupported`].
    fn read_device_vote(&self, state: &mut Self::State, vote: &mut [u32], lens: &mut [u64]) -> Result<StepStatus> {
        let _ = (state, vote, lens);
        Err(crate::BackendError::Unsupported { backend: "this backend", what: "reading a device vote".into() }.into())
    }

    /// Operation 3: `theta_i += weight * sum_r v_r,i` over the validated rank
    /// buffers in `gathered`, summed in rank order 0..W-1 in f32 starting from
    /// +0.0, then one f32 multiply and one f32 add (no fused multiply-add), for
    /// every index present in any buffer. Then error feedback on this rank's
    /// own entries: `acc_i -= v_own,i` when `config.error_feedback`, else the
    /// whole accumulator is zeroed.
    fn apply(
        &self,
        state: &mut Self::State,
        theta: &mut Self::Vector,
        gathered: &Gathered,
        own_rank: usize,
        weight: f32,
    ) -> Result<()>;
}

/// The host's validation of one bucket's gathered peer buffers: the
/// engine's reusable [`Validator`] and the bucket's `n` and wire dtype.
/// Handed to [`Backend::validate_peers`], whose default runs it.
pub struct HostPeerCheck<'v> {
    validator: &'v mut Validator,
    n: u64,
    dtype: WireDtype,
}

impl<'v> HostPeerCheck<'v> {
    /// A check of buffers for `n` elements of `dtype` with `validator`.
    pub fn new(validator: &'v mut Validator, n: u64, dtype: WireDtype) -> Self {
        HostPeerCheck { validator, n, dtype }
    }

    /// Validates every rank's buffer in rank order; the first failure is
    /// [`crate::Error::InvalidPeerBuffer`].
    pub fn run(self, gathered: &Gathered) -> Result<()> {
        if gathered.is_on_device() {
            return Err(crate::BackendError::Unsupported {
                backend: "host validator",
                what: "validating an exchange in device memory on the host".into(),
            }
            .into());
        }
        for (rank, bytes) in gathered.iter() {
            self.validator
                .validate(bytes, self.n, self.dtype)
                .map_err(|source| crate::Error::InvalidPeerBuffer { rank, source })?;
        }
        Ok(())
    }
}

/// Forwards every operation to the backend behind a shared reference, so
/// engines can borrow one backend (`SparseSync<&CpuBackend, _>`).
impl<B: Backend + ?Sized> Backend for &B {
    type Vector = B::Vector;
    type Buffer = B::Buffer;
    type State = B::State;
    forward_backend!();
}

/// Forwards every operation to the shared backend, so engines on other
/// threads can share one device context.
impl<B: Backend + ?Sized> Backend for Arc<B> {
    type Vector = B::Vector;
    type Buffer = B::Buffer;
    type State = B::State;
    forward_backend!();
}

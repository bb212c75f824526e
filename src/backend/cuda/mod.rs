//! The CUDA backend: the hand-written kernels in `kernels/*.cu` behind the
//! [`crate::Backend`] trait.
//!
//! One host orchestration ([`KernelBackend`]) drives the kernels through a
//! [`KernelRunner`]:
//! - [`CudaBackend`] (feature `cuda`): a GPU through cudarc, with the driver
//!   and NVRTC loaded dynamically so the crate builds without CUDA;
//! - `CudaEmuBackend` (feature `cuda-emu`): the same `.cu` sources compiled
//!   as host C++ against `kernels/emu/cuda_emu.h` and executed on the CPU,
//!   which is how CI without a GPU runs the conformance suite on them.
//!
//! Per step the fused pass reads `acc`, `delta`, `theta` once (128-bit loads)
//! and writes the spare accumulator once, then runs the pack kernels on it
//! speculatively: `cs_pack_gate` lets them work only when this rank's own
//! significance test triggered (a triggered rank always syncs: the vote is
//! a max), so an untriggered step pays a few empty launches. Its only
//! readback is the 64-byte control block: the [`crate::StepStatus`] and the
//! pack info (packed length, entry count). A sync then uses the packed
//! buffer as it is (a rank that did not trigger but must sync, forced or
//! outvoted, packs after the vote and reads the 24-byte info). Host-staged,
//! `select_pack` reads back the packed bytes (under the top-k and dense
//! rules the rule's bound in one copy, cut to the length the header
//! gives; under the threshold rule exactly the length the control block
//! gave) and returns them from host memory; `validate_peers` uploads the
//! gathered bytes of every rank and each rank's (offset, length), and
//! `kernels/validate.cu` checks every rank's buffer on the device (one
//! block per rank, the host validator's checks in its order, so the same
//! [`crate::WireError`] for the same bytes) and writes the apply
//! descriptors; one readback of 32 bytes per rank brings the verdicts.
//! `apply` then runs the rank-ordered scatter on the device with nothing
//! more to upload.
//!
//! Exchange in device memory ([`crate::collective::device`]): with a
//! collective of the backend's memory (NCCL on the backend's stream; the
//! in-process collective for the emulation), an engine of one bucket votes
//! there too: `accumulate_and_vote` runs the fused pass and
//! `cs_vote_word`, which writes this rank's vote words after the status;
//! the collective reduces them in place; `pack_after_device_vote` runs the
//! pack kernels behind the reduced vote (`cs_pack_gate` reads it: no sync,
//! no work); the collective gathers every rank's packed length; and
//! `read_device_vote` reads status, pack info, vote and lengths back in
//! one copy. On a sync, `pack_on_device` hands over that buffer, the
//! collective gathers every rank's bytes into `receive_on_device`'s
//! memory, and the validation writes its verdicts into the control block
//! without reading them: the apply kernels check them on the device (an
//! invalid buffer changes nothing on any rank), and the next step's
//! readback brings them to the host, where
//! [`crate::Backend::deferred_verdict`] reports them
//! ([`crate::SyncGroup::settle`]). So every step is one readback (64 bytes,
//! 4 (1 + W) rounded up to 8 for the vote, 8 W for the lengths, and 32 W
//! for the verdicts after a sync), and a syncing step uploads only each
//! rank's (offset, length), 16 bytes; no packed byte on the host
//! (`transfer.rs` asserts it on the emulation, `cuda::nccl` on a GPU).
//! With several buckets the vote stays on the host and each bucket's
//! speculative pack (on its own trigger) still saves the pack info.
//!
//! Device memory is allocated in `create_state`, except the staging for the
//! gathered bytes and descriptors, which grows (to the next power of
//! two) when an exchange is larger than any before. On the host, the packed
//! readback reuses a buffer sized for the largest possible packed buffer,
//! and the spans, verdicts and (when `apply` is given an exchange that
//! `validate_peers` did not just accept) the chunk tables and descriptors
//! live in reused vectors, so the
//! host orchestration allocates nothing per step after warm-up
//! (`tests/alloc.rs` holds the emulation to it). The cudarc runner passes
//! each launch's arguments to `cuLaunchKernel` from a stack array, not
//! through cudarc's launch builder (which collects them in a vector); no
//! test here counts its allocations, as none runs on a GPU.
//!
//! A framework's own device memory: [`CudaBackend::on_stream`] runs on the
//! caller's stream and context, and [`KernelBackend::wrap_device_memory`]
//! turns the caller's allocation (a tensor's data pointer and element
//! count) into a vector that steps read and update in place, checked
//! against the backend's device where the driver can tell.
//!
//! [`CudaBackend::on_stream`]: crate::CudaBackend::on_stream

mod backend;
#[cfg(feature = "cuda")]
mod compile;
#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda-emu")]
mod emu;
pub mod kernels;
mod peers;
mod runner;
mod state;

pub use backend::{DeviceBuffer, KernelBackend};
#[cfg(feature = "cuda")]
pub use compile::{cuda_include_dirs, nvrtc_available, nvrtc_ptx};
#[cfg(feature = "cuda")]
pub use driver::{CudaBackend, CudaMem, CudarcRunner, DEFAULT_CUDA_TIMEOUT, gpu_present};
#[cfg(feature = "cuda-emu")]
pub use emu::{CudaEmuBackend, EmuMem, EmuRunner, emulated_kernel_name};
pub use runner::KernelRunner;
pub use state::{KernelState, max_packed_bytes};

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
//! and writes the spare accumulator once; the only readback is the 32-byte
//! [`crate::StepStatus`]. A sync then runs the radix select and the
//! compaction on the device and copies only the packed bytes back.

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
pub use driver::{CudaBackend, CudaMem, CudarcRunner, gpu_present};
#[cfg(feature = "cuda-emu")]
pub use emu::{CudaEmuBackend, EmuMem, EmuRunner, emulated_kernel_name};
pub use runner::KernelRunner;
pub use state::{KernelState, max_packed_bytes};

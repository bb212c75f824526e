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
//! and writes the spare accumulator once; its only readback is the 32-byte
//! [`crate::StepStatus`]. A sync then runs the radix select, the compaction
//! and the checksum on the device and makes two readbacks: a 24-byte info
//! block (the packed length), then the packed bytes, which `select_pack`
//! returns from host memory. `apply` uploads the gathered bytes of every
//! rank and their chunk descriptors (two host-to-device copies), then runs
//! the rank-ordered scatter on the device.
//!
//! Device memory is allocated in `create_state`, except the staging for the
//! gathered bytes and descriptors, which `apply` grows (to the next power of
//! two) when an exchange is larger than any before. On the host, the packed
//! readback reuses a buffer sized for the largest possible packed buffer,
//! and `apply` reads each rank's chunk table into one reused
//! [`crate::wire::ChunkTable`] and fills a reused descriptor vector, so the
//! host orchestration allocates nothing per step after warm-up
//! (`tests/alloc.rs` holds the emulation to it; cudarc's own launch builder
//! is not covered, as no test here runs on a GPU).

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

//! The one seam between the host orchestration ([`super::KernelBackend`]) and
//! whatever executes the kernels: real GPUs through cudarc, or the CPU
//! emulation of the same `.cu` sources.

use super::kernels::{Arg, Kernel};
use crate::collective::DeviceMemory;
use crate::error::Result;

/// Executes the kernels of `kernels/*.cu` in order on one stream.
///
/// Contract: launches and copies take effect in call order; `read` returns
/// only once every earlier launch has finished and the bytes are on the
/// host. Memory from `alloc_zeroed` is at least 256-byte aligned (the kernels
/// use 128-bit loads) and stays at the address [`KernelRunner::ptr`] reports
/// until dropped.
pub trait KernelRunner: Send + Sync + 'static {
    /// One device allocation.
    type Mem: Send;

    /// Describes the device, e.g. `"cuda:0 NVIDIA H100 (sm_90)"`.
    fn device_name(&self) -> String;
    /// The memory the runner's allocations live in and the stream its work
    /// is ordered on, for a collective that exchanges it.
    fn device_memory(&self) -> DeviceMemory;
    /// Blocks a grid-stride kernel is given (enough to fill the device).
    fn stride_blocks(&self) -> u32;
    /// A zero-filled allocation of `bytes` bytes (at least 1).
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Mem>;
    /// The device address of `mem`, for kernel arguments.
    fn ptr(&self, mem: &Self::Mem) -> u64;
    /// A handle to `bytes` bytes of device memory at address `ptr` that the
    /// caller owns: the runner reads and writes it like its own allocations
    /// and never frees it. Errors ([`crate::BackendError::Unsupported`])
    /// where the runner can tell that the memory is not on its device or is
    /// shorter than `bytes`.
    ///
    /// # Safety
    /// The `bytes` bytes at `ptr` must be device memory of this runner's
    /// device that stays allocated for as long as the handle lives, and
    /// nothing else may access it while a launch or copy issued through the
    /// handle runs (on a GPU: no other stream writes it concurrently).
    unsafe fn borrow(&self, ptr: u64, bytes: usize) -> Result<Self::Mem>;
    /// Size of `mem` in bytes.
    fn size(&self, mem: &Self::Mem) -> usize;
    /// Copies `src` to `dst` at byte `offset` (bounds checked by the caller).
    fn write(&self, dst: &mut Self::Mem, offset: usize, src: &[u8]) -> Result<()>;
    /// Copies `dst.len()` bytes from `src` at byte `offset` after all earlier work.
    fn read(&self, src: &Self::Mem, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Launches `kernel` on `grid` blocks of [`super::kernels::BLOCK`] threads.
    ///
    /// # Safety
    /// Every `Arg::Ptr` must address live memory of this runner large enough
    /// for what the kernel's contract (its comment in `kernels/`) accesses.
    unsafe fn launch(&self, kernel: Kernel, grid: u32, args: &[Arg]) -> Result<()>;
}

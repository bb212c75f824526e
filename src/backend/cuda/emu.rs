//! The CPU emulation runner (feature `cuda-emu`): the `.cu` kernels compiled
//! as host C++ by build.rs against `kernels/emu/cuda_emu.h` and executed by
//! `cs_emu_launch` (blocks in sequence, a block's threads as fibers).

use super::backend::KernelBackend;
use super::kernels::{Arg, BLOCK, Kernel, arg_slots};
use super::runner::KernelRunner;
use crate::error::{BackendError, Result};
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::{CStr, c_char};
use std::ptr::NonNull;

unsafe extern "C" {
    fn cs_emu_launch(id: u32, grid: u32, block: u32, args: *const u64, nargs: u32) -> i32;
    fn cs_emu_kernel_name(id: u32) -> *const c_char;
}

/// The `.cu` kernels executed on the CPU through the emulation header.
pub type CudaEmuBackend = KernelBackend<EmuRunner>;

impl CudaEmuBackend {
    /// The emulated backend. Always available when the feature is built.
    pub fn new() -> Self {
        KernelBackend::from_runner(EmuRunner { _private: () }, "cuda-emu")
    }
}

impl Default for CudaEmuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs kernels through `cs_emu_launch`; "device memory" is host memory.
#[derive(Debug)]
pub struct EmuRunner {
    _private: (),
}

/// Host memory standing in for device memory: a 256-byte aligned, zeroed
/// allocation of the runner, or (from [`KernelRunner::borrow`]) the
/// caller's memory, which is never freed here. Kernels write through its
/// raw pointer, so it is never borrowed as a slice while a launch runs.
#[derive(Debug)]
pub struct EmuMem {
    ptr: NonNull<u8>,
    size: usize,
    /// `Some` when the runner allocated the memory (and frees it on drop).
    owned: Option<Layout>,
}

// SAFETY: EmuMem exclusively owns its allocation, like a Box<[u8]>, or has
// exclusive use of the caller's memory by `borrow`'s contract.
unsafe impl Send for EmuMem {}

impl Drop for EmuMem {
    fn drop(&mut self) {
        if let Some(layout) = self.owned {
            // SAFETY: allocated in `alloc_zeroed` with exactly this layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

/// The kernel name the emulation library reports for `id` (`None` past its
/// table): lets tests prove the Rust and C++ kernel tables agree.
pub fn emulated_kernel_name(id: u32) -> Option<String> {
    // SAFETY: returns null or a pointer to a static NUL-terminated string.
    let p = unsafe { cs_emu_kernel_name(id) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, static, NUL-terminated (see above).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn out_of_bounds(call: &'static str, offset: usize, len: usize, size: usize) -> crate::Error {
    BackendError::Driver {
        backend: "cuda-emu",
        call,
        message: format!("range {offset}..{} outside an allocation of {size} bytes", offset + len),
    }
    .into()
}

impl KernelRunner for EmuRunner {
    type Mem = EmuMem;

    fn device_name(&self) -> String {
        "CPU emulation of kernels/*.cu".into()
    }

    fn device_memory(&self) -> crate::collective::DeviceMemory {
        crate::collective::DeviceMemory::Emulated
    }

    fn stride_blocks(&self) -> u32 {
        // Blocks run one after another here; a few keep the grid-stride and
        // two-level reduction paths exercised without slowing tests down.
        4
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<EmuMem> {
        let size = bytes.max(16);
        let layout = Layout::from_size_align(size, 256)
            .map_err(|_| BackendError::OutOfMemory { backend: "cuda-emu", bytes: size as u64 })?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(BackendError::OutOfMemory { backend: "cuda-emu", bytes: size as u64 })?;
        Ok(EmuMem { ptr, size, owned: Some(layout) })
    }

    unsafe fn borrow(&self, ptr: u64, bytes: usize) -> Result<EmuMem> {
        // The emulation's device memory is host memory: any live host
        // allocation is on its "device", so only null can be refused.
        let ptr = NonNull::new(ptr as usize as *mut u8)
            .ok_or(BackendError::Unsupported { backend: "cuda-emu", what: "wrapping a null pointer".into() })?;
        Ok(EmuMem { ptr, size: bytes, owned: None })
    }

    fn ptr(&self, mem: &EmuMem) -> u64 {
        mem.ptr.as_ptr() as u64
    }

    fn size(&self, mem: &EmuMem) -> usize {
        mem.size
    }

    fn write(&self, dst: &mut EmuMem, offset: usize, src: &[u8]) -> Result<()> {
        if offset.checked_add(src.len()).is_none_or(|end| end > dst.size) {
            return Err(out_of_bounds("write", offset, src.len(), dst.size));
        }
        // SAFETY: bounds checked above; `src` cannot alias memory we own mutably.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr.as_ptr().add(offset), src.len()) };
        Ok(())
    }

    fn read(&self, src: &EmuMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        if offset.checked_add(dst.len()).is_none_or(|end| end > src.size) {
            return Err(out_of_bounds("read", offset, dst.len(), src.size));
        }
        // SAFETY: bounds checked above; launches are synchronous, so no kernel
        // is writing this memory now.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn launch(&self, kernel: Kernel, grid: u32, args: &[Arg]) -> Result<()> {
        // On the stack: a launch allocates nothing (tests/alloc.rs).
        let slots = arg_slots(kernel, args, "cuda-emu", "cs_emu_launch")?;
        // SAFETY: the caller guarantees every pointer argument is live and
        // large enough; the launch is synchronous and returns after all
        // threads have joined.
        let rc = unsafe { cs_emu_launch(kernel as u32, grid, BLOCK, slots.as_ptr(), args.len() as u32) };
        if rc != 0 {
            return Err(BackendError::Driver {
                backend: "cuda-emu",
                call: "cs_emu_launch",
                message: format!("{} failed with code {rc}", kernel.name()),
            }
            .into());
        }
        Ok(())
    }
}

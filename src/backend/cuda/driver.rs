//! The cudarc runner (feature `cuda`): kernels on a real GPU through the
//! dynamically loaded driver API. Modules are loaded once per backend: the
//! PTX embedded by build.rs when nvcc was available, else (or when the driver
//! rejects it) PTX compiled by NVRTC for the live device's compute capability.

use super::backend::KernelBackend;
use super::compile::nvrtc_ptx;
use super::kernels::{Arg, BLOCK, Kernel, MAX_ARGS, Module, arg_slots};
use super::runner::KernelRunner;
use crate::error::{BackendError, Result};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, result, sys};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default bound on every wait for the GPU ([`CudarcRunner::set_timeout`]).
pub const DEFAULT_CUDA_TIMEOUT: Duration = Duration::from_secs(120);

/// The kernels on an NVIDIA GPU through cudarc.
pub type CudaBackend = KernelBackend<CudarcRunner>;

impl CudaBackend {
    /// Opens GPU `ordinal` and loads the kernel modules.
    ///
    /// Errors: [`BackendError::Unavailable`] when `libcuda` (or, for NVRTC,
    /// `libnvrtc`) cannot be loaded; [`BackendError::NoAdapter`] when no GPU
    /// with that ordinal exists; [`BackendError::Compile`] /
    /// [`BackendError::Driver`] when a module does not compile or load.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(KernelBackend::from_runner(CudarcRunner::new(ordinal)?, "cuda"))
    }

    /// Like [`CudaBackend::new`], with `timeout` bounding every wait for the
    /// GPU (a readback's wait for earlier kernels) instead of
    /// [`DEFAULT_CUDA_TIMEOUT`]; a wait that runs past it is
    /// [`crate::Error::Timeout`].
    pub fn with_timeout(ordinal: usize, timeout: Duration) -> Result<Self> {
        let mut runner = CudarcRunner::new(ordinal)?;
        runner.set_timeout(timeout);
        Ok(KernelBackend::from_runner(runner, "cuda"))
    }

    /// The backend on the caller's `stream` (and its context): every kernel
    /// and copy of this backend is issued on it, in order with the caller's
    /// own work there, so a framework hands over a gradient it just wrote
    /// on that stream without a synchronization. The caller's context is
    /// used as it is (its settings, event tracking included, are left
    /// alone); `timeout` bounds every wait as in [`CudaBackend::with_timeout`].
    /// Errors as for [`CudaBackend::new`].
    pub fn on_stream(stream: Arc<CudaStream>, timeout: Duration) -> Result<Self> {
        let mut runner = CudarcRunner::on_stream(stream)?;
        runner.set_timeout(timeout);
        Ok(KernelBackend::from_runner(runner, "cuda"))
    }
}

/// [`BackendError::Unavailable`] unless `libcuda` can be loaded.
fn driver_present() -> Result<()> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { sys::is_culib_present() } {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            reason: "libcuda.so not found (install the NVIDIA driver)".into(),
        }
        .into());
    }
    Ok(())
}

/// Whether the CUDA driver library can be loaded and reports at least one GPU.
pub fn gpu_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return false;
    }
    CudaContext::device_count().is_ok_and(|n| n > 0)
}

fn driver_err(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> crate::Error {
    move |e| BackendError::Driver { backend: "cuda", call, message: format!("{e}") }.into()
}

/// Device memory and its (stable) address: an allocation of the runner, or
/// (from [`KernelRunner::borrow`]) the caller's memory, never freed here.
#[derive(Debug)]
pub struct CudaMem {
    /// The runner's allocation; `None` for the caller's memory.
    _owned: Option<CudaSlice<u8>>,
    ptr: u64,
    bytes: usize,
}

/// Launches on one stream of one context, with every kernel function cached.
pub struct CudarcRunner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Recorded on the stream and polled by every wait (created once).
    event: CudaEvent,
    timeout: Duration,
    functions: Vec<CudaFunction>,
    sms: u32,
    description: String,
}

impl std::fmt::Debug for CudarcRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudarcRunner").field("device", &self.description).finish()
    }
}

#[cfg(chronos_embedded_ptx)]
fn embedded_ptx(module: Module) -> Option<&'static str> {
    Some(match module {
        Module::Fused => include_str!(concat!(env!("OUT_DIR"), "/fused.ptx")),
        Module::SelectPack => include_str!(concat!(env!("OUT_DIR"), "/select_pack.ptx")),
        Module::Apply => include_str!(concat!(env!("OUT_DIR"), "/apply.ptx")),
        Module::Validate => include_str!(concat!(env!("OUT_DIR"), "/validate.ptx")),
    })
}

#[cfg(not(chronos_embedded_ptx))]
fn embedded_ptx(_module: Module) -> Option<&'static str> {
    None
}

impl CudarcRunner {
    /// Opens GPU `ordinal`; see [`CudaBackend::new`] for the errors.
    pub fn new(ordinal: usize) -> Result<Self> {
        driver_present()?;
        let count = CudaContext::device_count().map_err(|e| BackendError::NoAdapter {
            backend: "cuda",
            hint: format!("cuInit/cuDeviceGetCount failed ({e}); is a GPU visible?"),
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(BackendError::NoAdapter {
                backend: "cuda",
                hint: format!("GPU {ordinal} requested, {count} visible (check CUDA_VISIBLE_DEVICES)"),
            }
            .into());
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuCtxCreate"))?;
        // One stream, raw device pointers as kernel arguments: cudarc's
        // per-allocation event tracking is unnecessary. (Only on a context
        // this runner made: a caller's context keeps its settings.)
        // SAFETY: all work of this runner is issued on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        Self::assemble(ctx, stream)
    }

    /// A runner issuing everything on the caller's `stream`, in the
    /// stream's context, which it leaves configured as it is.
    pub fn on_stream(stream: Arc<CudaStream>) -> Result<Self> {
        driver_present()?;
        let ctx = stream.context().clone();
        ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        Self::assemble(ctx, stream)
    }

    /// Loads the modules and functions for `stream` of `ctx`.
    fn assemble(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Result<Self> {
        let (major, minor) = ctx.compute_capability().map_err(driver_err("cuDeviceGetAttribute"))?;
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err("cuDeviceGetAttribute"))?
            .max(1) as u32;
        let arch = format!("sm_{major}{minor}");
        let mut modules = Vec::new();
        for module in Module::ALL {
            let loaded = match embedded_ptx(module) {
                Some(ptx) => ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)).ok(),
                None => None,
            };
            let loaded = match loaded {
                Some(m) => m,
                None => {
                    let ptx = nvrtc_ptx(module, &arch)?;
                    ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)).map_err(driver_err("cuModuleLoadData"))?
                }
            };
            modules.push((module, loaded));
        }
        let mut functions = Vec::with_capacity(Kernel::ALL.len());
        for kernel in Kernel::ALL {
            let (_, m) = modules.iter().find(|(md, _)| *md == kernel.module()).expect("every module is loaded");
            functions.push(m.load_function(kernel.name()).map_err(driver_err("cuModuleGetFunction"))?);
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let description = format!("cuda:{} {name} ({arch}, {sms} SMs)", ctx.ordinal());
        let event = ctx.new_event(None).map_err(driver_err("cuEventCreate"))?;
        Ok(CudarcRunner { ctx, stream, event, timeout: DEFAULT_CUDA_TIMEOUT, functions, sms, description })
    }

    /// The stream every launch and copy is issued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The bound on every wait for the GPU (default [`DEFAULT_CUDA_TIMEOUT`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the bound on every wait for the GPU.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Waits for all work issued so far on the stream, at most
    /// [`CudarcRunner::timeout`]: records the runner's event and polls it
    /// (spinning briefly, then yielding), so a kernel that never finishes
    /// is [`crate::Error::Timeout`] instead of a hang. A kernel fault
    /// reported by the poll is a [`BackendError::Driver`].
    pub fn synchronize(&self) -> Result<()> {
        self.event.record(&self.stream).map_err(driver_err("cuEventRecord"))?;
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            if self.event.try_is_complete().map_err(driver_err("cuEventQuery"))? {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(crate::Error::Timeout { op: "cuda stream wait", missing: Vec::new(), after: self.timeout });
            }
            polls = polls.saturating_add(1);
            if polls < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
}

impl KernelRunner for CudarcRunner {
    type Mem = CudaMem;

    fn device_name(&self) -> String {
        self.description.clone()
    }

    fn device_memory(&self) -> crate::collective::DeviceMemory {
        crate::collective::DeviceMemory::Cuda { ordinal: self.ctx.ordinal(), stream: self.stream.cu_stream() as u64 }
    }

    fn stride_blocks(&self) -> u32 {
        // Enough resident 256-thread blocks to saturate memory bandwidth.
        self.sms * 8
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<CudaMem> {
        let bytes = bytes.max(16);
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(|_| BackendError::OutOfMemory { backend: "cuda", bytes: bytes as u64 })?;
        let ptr = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        Ok(CudaMem { _owned: Some(slice), ptr, bytes })
    }

    unsafe fn borrow(&self, ptr: u64, bytes: usize) -> Result<CudaMem> {
        let unsupported = |what: String| -> crate::Error { BackendError::Unsupported { backend: "cuda", what }.into() };
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        // What the driver knows about the address: its kind of memory, its
        // device, and the allocation around it.
        let mut kind = 0u32;
        let mut ordinal = -1i32;
        // SAFETY: each query writes one value of the attribute's documented
        // type (CUmemorytype: an unsigned int; the ordinal: an int) into it.
        let queried = unsafe {
            sys::cuPointerGetAttribute(
                (&raw mut kind).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                ptr,
            )
            .result()
            .and_then(|()| {
                sys::cuPointerGetAttribute(
                    (&raw mut ordinal).cast(),
                    sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                    ptr,
                )
                .result()
            })
        };
        if let Err(e) = queried {
            return Err(unsupported(format!(
                "wrapping {ptr:#x}, which the driver does not know as device memory ({e})"
            )));
        }
        let device = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32;
        let unified = sys::CUmemorytype::CU_MEMORYTYPE_UNIFIED as u32;
        if kind != device && kind != unified {
            return Err(unsupported(format!("wrapping {ptr:#x}: memory type {kind} is not device memory")));
        }
        if usize::try_from(ordinal).ok() != Some(self.ctx.ordinal()) {
            return Err(unsupported(format!(
                "wrapping {ptr:#x}: it is on device {ordinal}, this backend runs on device {}",
                self.ctx.ordinal()
            )));
        }
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: writes the allocation's base and size into the two locals.
        if let Err(e) = unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr).result() } {
            return Err(unsupported(format!("wrapping {ptr:#x}: no allocation found around it ({e})")));
        }
        let end = ptr.checked_add(bytes as u64);
        if end.is_none_or(|end| end > base.saturating_add(size as u64)) {
            return Err(unsupported(format!(
                "wrapping {bytes} bytes at {ptr:#x}: the allocation spans {base:#x} + {size} bytes"
            )));
        }
        Ok(CudaMem { _owned: None, ptr, bytes })
    }

    fn ptr(&self, mem: &CudaMem) -> u64 {
        mem.ptr
    }

    fn size(&self, mem: &CudaMem) -> usize {
        mem.bytes
    }

    fn write(&self, dst: &mut CudaMem, offset: usize, src: &[u8]) -> Result<()> {
        check_range("cuMemcpyHtoDAsync", dst, offset, src.len())?;
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        // SAFETY: the range lies inside `dst` (checked above), which is live
        // device memory of this context; a pageable source is copied before
        // the call returns, so `src` may be dropped afterwards.
        unsafe { result::memcpy_htod_async(dst.ptr + offset as u64, src, self.stream.cu_stream()) }
            .map_err(driver_err("cuMemcpyHtoDAsync"))
    }

    fn read(&self, src: &CudaMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        check_range("cuMemcpyDtoHAsync", src, offset, dst.len())?;
        // Bounded wait for the kernels before it first: a copy to pageable
        // memory blocks the host until the stream reaches it, so waiting
        // for the stream here is what keeps the copy itself short.
        self.synchronize()?;
        // SAFETY: the range lies inside `src` (checked above); the wait
        // after the copy keeps `dst` borrowed until the bytes are there.
        unsafe { result::memcpy_dtoh_async(dst, src.ptr + offset as u64, self.stream.cu_stream()) }
            .map_err(driver_err("cuMemcpyDtoHAsync"))?;
        self.synchronize()
    }

    unsafe fn launch(&self, kernel: Kernel, grid: u32, args: &[Arg]) -> Result<()> {
        // The argument values and the pointers to them on the stack, so a
        // launch allocates nothing (cudarc's launch builder keeps a vector);
        // the driver reads as many bytes of each slot as the parameter has.
        let mut values = arg_slots(kernel, args, "cuda", "cuLaunchKernel")?;
        let mut params = [std::ptr::null_mut::<std::ffi::c_void>(); MAX_ARGS];
        for (param, value) in params.iter_mut().zip(values.iter_mut()) {
            *param = (value as *mut u64).cast();
        }
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        let f = self.functions[kernel as usize].cu_function();
        // SAFETY: argument widths match the kernel signature (kernels.rs
        // table); pointer validity is the caller's contract; `values`
        // outlives the call, which copies the parameters.
        unsafe {
            result::launch_kernel(
                f,
                (grid.max(1), 1, 1),
                (BLOCK, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params[..args.len()],
            )
        }
        .map_err(driver_err("cuLaunchKernel"))
    }
}

/// A driver error unless `offset..offset + len` lies inside `mem`.
fn check_range(call: &'static str, mem: &CudaMem, offset: usize, len: usize) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > mem.bytes) {
        return Err(BackendError::Driver {
            backend: "cuda",
            call,
            message: format!(
                "range {offset}..{} outside {} bytes of device memory",
                offset.saturating_add(len),
                mem.bytes
            ),
        }
        .into());
    }
    Ok(())
}

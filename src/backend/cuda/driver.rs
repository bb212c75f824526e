//! The cudarc runner (feature `cuda`): kernels on a real GPU through the
//! dynamically loaded driver API. Modules are loaded once per backend: the
//! PTX embedded by build.rs when nvcc was available, else (or when the driver
//! rejects it) PTX compiled by NVRTC for the live device's compute capability.

use super::backend::KernelBackend;
use super::compile::nvrtc_ptx;
use super::kernels::{Arg, BLOCK, Kernel, Module};
use super::runner::KernelRunner;
use crate::error::{BackendError, Result};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
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

/// One device allocation and its (stable) device address.
#[derive(Debug)]
pub struct CudaMem {
    slice: CudaSlice<u8>,
    ptr: u64,
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
    })
}

#[cfg(not(chronos_embedded_ptx))]
fn embedded_ptx(_module: Module) -> Option<&'static str> {
    None
}

impl CudarcRunner {
    /// Opens GPU `ordinal`; see [`CudaBackend::new`] for the errors.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(BackendError::Unavailable {
                backend: "cuda",
                reason: "libcuda.so not found (install the NVIDIA driver)".into(),
            }
            .into());
        }
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
        // per-allocation event tracking is unnecessary.
        // SAFETY: all work of this runner is issued on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
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
        let description = format!("cuda:{ordinal} {name} ({arch}, {sms} SMs)");
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
        Ok(CudaMem { slice, ptr })
    }

    fn ptr(&self, mem: &CudaMem) -> u64 {
        mem.ptr
    }

    fn size(&self, mem: &CudaMem) -> usize {
        mem.slice.len()
    }

    fn write(&self, dst: &mut CudaMem, offset: usize, src: &[u8]) -> Result<()> {
        let mut view = dst.slice.try_slice_mut(offset..offset + src.len()).ok_or(BackendError::Driver {
            backend: "cuda",
            call: "cuMemcpyHtoDAsync",
            message: "destination range out of bounds".into(),
        })?;
        self.stream.memcpy_htod(src, &mut view).map_err(driver_err("cuMemcpyHtoDAsync"))
    }

    fn read(&self, src: &CudaMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        let view = src.slice.try_slice(offset..offset + dst.len()).ok_or(BackendError::Driver {
            backend: "cuda",
            call: "cuMemcpyDtoHAsync",
            message: "source range out of bounds".into(),
        })?;
        // Bounded wait for the kernels before it first: a copy to pageable
        // memory blocks the host until the stream reaches it, so waiting
        // for the stream here is what keeps the copy itself short.
        self.synchronize()?;
        self.stream.memcpy_dtoh(&view, dst).map_err(driver_err("cuMemcpyDtoHAsync"))?;
        self.synchronize()
    }

    unsafe fn launch(&self, kernel: Kernel, grid: u32, args: &[Arg]) -> Result<()> {
        let f = &self.functions[kernel as usize];
        let mut builder = self.stream.launch_builder(f);
        for arg in args {
            match arg {
                Arg::Ptr(p) | Arg::U64(p) => builder.arg(p),
                Arg::U32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        let cfg = LaunchConfig { grid_dim: (grid.max(1), 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument widths match the kernel signature (kernels.rs
        // table); pointer validity is the caller's contract.
        unsafe { builder.launch(cfg) }.map_err(driver_err("cuLaunchKernel"))?;
        Ok(())
    }
}

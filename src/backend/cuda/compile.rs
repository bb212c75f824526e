//! Compiling the kernel sources to PTX with NVRTC (feature `cuda`), through
//! cudarc's dynamically loaded `libnvrtc`. Used at first use on a GPU when no
//! PTX was embedded by build.rs, and by the tests that prove every kernel
//! compiles on machines without a GPU.

use super::kernels::Module;
use crate::error::{BackendError, Result};
use std::path::PathBuf;

/// Directories searched for `cuda_fp16.h`/`cuda_bf16.h` and the CCCL headers
/// they include: `$CHRONOS_CUDA_HOME`, `$CUDA_HOME`, `$CUDA_PATH` and
/// `/usr/local/cuda`, each as `include` and `include/cccl`, when present.
pub fn cuda_include_dirs() -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = ["CHRONOS_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .collect();
    homes.push(PathBuf::from("/usr/local/cuda"));
    let mut dirs = Vec::new();
    for home in homes {
        for sub in ["include", "include/cccl"] {
            let d = home.join(sub);
            if d.is_dir() && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Whether `libnvrtc` can be loaded (checked before any NVRTC call, because
/// cudarc panics on a missing library).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library; no other effect.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles `module` to PTX for `arch` (e.g. `"sm_90"`) with NVRTC.
///
/// Errors: [`BackendError::Unavailable`] when `libnvrtc` cannot be loaded,
/// [`BackendError::Compile`] with the compiler log otherwise.
pub fn nvrtc_ptx(module: Module, arch: &str) -> Result<String> {
    if !nvrtc_available() {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            reason: "libnvrtc not found (install the CUDA toolkit or `pip install nvidia-cuda-nvrtc` and add its \
                     lib directory to LD_LIBRARY_PATH)"
                .into(),
        }
        .into());
    }
    let opts = cudarc::nvrtc::CompileOptions {
        include_paths: cuda_include_dirs().iter().map(|d| d.display().to_string()).collect(),
        // IEEE division and square root, no contraction: the kernels spell
        // out every rounding they need (__fadd_rn, __fmaf_rn, ...).
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(false),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(format!("{}.cu", module.stem())),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(module.source(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => {
            let message = match &e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => format!("{other:?}"),
            };
            Err(BackendError::Compile { backend: "cuda", module: module.stem().into(), message }.into())
        }
    }
}

//! The CUDA kernels without a GPU: NVRTC and nvcc/ptxas compile checks
//! (`compile`), the `.cu` sources executed on the CPU through the emulation
//! header and compared bit for bit with an independent host reference
//! (`emu`), and the real cudarc backend, which runs only where a GPU is
//! visible (`gpu`). Under `CI=true` nothing but the GPU part may skip.

#[cfg(feature = "cuda")]
mod compile;
#[cfg(feature = "cuda-emu")]
mod emu;
#[cfg(feature = "cuda")]
mod gpu;
#[cfg(feature = "nccl")]
mod nccl;
#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
mod reference;

/// Whether missing tools must fail the test instead of skipping it.
#[cfg(feature = "cuda")]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

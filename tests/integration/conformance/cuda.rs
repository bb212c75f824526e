//! The conformance suite on a real GPU through cudarc (feature `cuda`:
//! `cargo test --features cuda` on a machine with a GPU runs every case on
//! it; `scripts/gpu-check` runs them from a prebuilt binary). Without a GPU
//! the maker prints why and the cases skip, also under `CI=true` (CI has
//! no GPU); with `CHRONOS_REQUIRE_GPU=true` a missing GPU fails them.

conformance_suite!(
    cuda,
    || match chronos_sync::CudaBackend::new(0) {
        Ok(backend) => {
            println!("conformance on {}", chronos_sync::Backend::name(&backend));
            Some(backend)
        }
        Err(e) if crate::conformance::gpu_required() => panic!("CHRONOS_REQUIRE_GPU=true but CUDA is unavailable: {e}"),
        Err(e) => {
            println!("CUDA backend unavailable: {e}");
            None
        }
    },
    requires_gpu
);

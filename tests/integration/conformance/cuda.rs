//! The conformance suite on a real GPU through cudarc. Instantiated only with
//! the `nccl` feature — the GPU test command is
//! `cargo test --features cuda,nccl` — because CI (`--features cuda,cuda-emu`,
//! `CI=true`) has no GPU and the suite treats an unavailable backend under CI
//! as a failure. Without a GPU the maker reports why and the cases skip.

conformance_suite!(cuda, || match chronos_sync::CudaBackend::new(0) {
    Ok(backend) => Some(backend),
    Err(e) => {
        println!("CUDA backend unavailable: {e}");
        None
    }
});

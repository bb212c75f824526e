//! The conformance suite on the `.cu` kernels executed on the CPU through the
//! emulation header (feature `cuda-emu`; always available where it builds).

conformance_suite!(cuda_emu, || Some(chronos_sync::CudaEmuBackend::new()));

//! The conformance suite on the CPU backend (always available).

conformance_suite!(cpu, || Some(chronos_sync::CpuBackend::new()));

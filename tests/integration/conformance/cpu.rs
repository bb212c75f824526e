//! The conformance suite on the CPU backend (always available). Three worker
//! threads: not the machine's core count, so block partitioning differs from
//! the default pool's while results must not (the backend's contract).

conformance_suite!(cpu, || crate::conformance::available("cpu", chronos_sync::CpuBackend::with_threads(3)));

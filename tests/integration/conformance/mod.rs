//! The conformance suite: written once, generic over [`Backend`], and
//! instantiated per backend with [`conformance_suite!`].
//!
//! Every case holds a backend to the f64 reference (`crate::reference`) and to
//! the spec's invariants through the public entry point, [`SparseSync`] on
//! [`LocalCollective`] ranks (see `crate::common::run_group`).
//!
//! Files: `lockstep` (runs a group and the reference side by side and compares
//! every step), `invariants` (conservation, replicas, significance, seed
//! parity), `matching` (packed bytes and state against the reference for every
//! rule, dtype and size), `failures` (all-zero and non-finite input,
//! timeouts), `corrupt` (peer buffers the backend's validation must refuse
//! with the host validator's errors), `grouped` (a group's buckets against separate engines, a
//! wrong length on one rank), `restart` (checkpoint, restore, continue). One file per backend instantiates the suite (`cpu.rs`).
//!
//! [`SparseSync`]: chronos_sync::SparseSync
//! [`LocalCollective`]: chronos_sync::LocalCollective

use chronos_sync::Backend;
use std::sync::Arc;

/// Instantiates every conformance case for one backend.
///
/// `conformance_suite!(name, make)` expands to `mod name { ... }` with one
/// `#[test]` per case. `make` is a non-capturing closure or function of type
/// `fn() -> Option<B>` with `B: Backend`, called once per test:
/// - `Some(backend)`: the case runs on it (ranks share it through an `Arc`).
/// - `None`: the backend is unavailable on this machine (no adapter, no
///   driver); the test prints `skipped: <name> unavailable` and passes. The
///   maker itself must panic instead of returning `None` when the environment
///   has `CI=true`, so CI never skips silently; the generated test also
///   panics in that case as a second guard.
///
/// Add a backend with one file next to `cpu.rs` holding e.g.
/// `conformance_suite!(wgpu, || crate::conformance::available("wgpu", WgpuBackend::new()));`
/// (behind its feature) and one `mod` line at the end of this file;
/// [`available`] implements the CI rule for makers. Run one backend's suite with
/// `cargo test --test integration conformance::<file>::<name>::`.
macro_rules! conformance_suite {
    ($name:ident, $make:expr) => {
        conformance_suite!(@suite run_case, $name, $make);
    };
    // A backend that needs a GPU: without one the cases skip (printed) even
    // under `CI=true`, unless `CHRONOS_REQUIRE_GPU=true` (set by
    // `scripts/gpu-check`), under which a missing GPU fails them.
    ($name:ident, $make:expr, requires_gpu) => {
        conformance_suite!(@suite run_case_on_gpu, $name, $make);
    };
    (@suite $runner:ident, $name:ident, $make:expr) => {
        mod $name {
            conformance_suite!(@cases $runner, $name, $make;
                conservation_per_rank,
                replicas_bitwise_identical_every_step,
                significance_matches_f64,
                seed_parity_warmup_ramp,
                seed_parity_forced_sync_at_step_50,
                seed_parity_significance_zero_without_updates,
                topk_bytes_match_reference_every_dtype,
                every_rule_and_dtype_matches_reference,
                sizes_across_block_and_chunk_boundaries,
                ten_million_elements,
                all_zero_input,
                non_finite_input_fails_every_rank_and_rolls_back,
                overflowing_accumulation_is_refused,
                missing_rank_times_out,
                group_buckets_match_separate_engines,
                wrong_length_on_one_rank_fails_every_rank_at_the_same_step,
                wrong_bucket_count_on_one_rank_fails_every_rank,
                checkpoint_restore_continues_bitwise,
                corrupt_peer_buffers_get_the_host_validators_errors,
                corrupted_in_transit_fails_every_rank_alike,
            );
        }
    };
    (@cases $runner:ident, $name:ident, $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$runner(stringify!($name), $make, $crate::conformance::cases::$case);
            }
        )*
    };
}

mod corrupt;
mod failures;
mod grouped;
mod invariants;
mod lockstep;
mod matching;
mod restart;

/// Every case, generic over the backend (the macro refers to them here).
pub mod cases {
    pub use super::corrupt::*;
    pub use super::failures::*;
    pub use super::grouped::*;
    pub use super::invariants::*;
    pub use super::matching::*;
    pub use super::restart::*;
}

/// The maker rule in one place: `Ok(backend)` is `Some(backend)`; an error
/// panics with its message when `CI=true` and is otherwise printed to stderr
/// as the reason the backend is unavailable (`None`).
pub fn available<B>(name: &str, made: chronos_sync::Result<B>) -> Option<B> {
    match made {
        Ok(backend) => Some(backend),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{name} backend unavailable under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("{name} backend unavailable: {e}");
            None
        }
    }
}

/// Runs `case` on the backend `make` builds, or reports it unavailable.
pub fn run_case<B: Backend>(name: &str, make: fn() -> Option<B>, case: fn(&Arc<B>)) {
    match make() {
        Some(backend) => case(&Arc::new(backend)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{name} backend unavailable under CI=true: its maker must panic with the reason instead")
        }
        None => println!("skipped: {name} unavailable"),
    }
}

#[cfg(feature = "cuda")]
/// Whether a missing GPU must fail the GPU-only suites
/// (`CHRONOS_REQUIRE_GPU=true`, as `scripts/gpu-check` runs them).
pub fn gpu_required() -> bool {
    std::env::var("CHRONOS_REQUIRE_GPU").is_ok_and(|v| v == "true" || v == "1")
}

#[cfg(feature = "cuda")]
/// [`run_case`] for a backend that needs a GPU: `None` (no GPU) skips with a
/// printed line, also under `CI=true` (CI machines have none), and fails
/// only when [`gpu_required`].
pub fn run_case_on_gpu<B: Backend>(name: &str, make: fn() -> Option<B>, case: fn(&Arc<B>)) {
    match make() {
        Some(backend) => case(&Arc::new(backend)),
        None if gpu_required() => panic!("{name} backend unavailable under CHRONOS_REQUIRE_GPU=true"),
        None => println!("skipped: {name} unavailable (no GPU; CHRONOS_REQUIRE_GPU=true makes this a failure)"),
    }
}

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda-emu")]
mod cuda_emu;
#[cfg(feature = "wgpu")]
mod wgpu;

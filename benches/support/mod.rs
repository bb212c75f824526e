//! Code shared by every bench binary and by `examples/bench-report.rs`
//! (included with `#[path]`, so each binary compiles its own copy).
//!
//! - [`config`]: the sizes and the criterion settings, from environment variables.
//! - [`data`]: deterministic pseudo-random inputs, filled in parallel.
//! - [`stream`]: the STREAM-like copy and triad that measure this machine's
//!   memory bandwidth in the same process as the kernels.
//! - [`roofline`]: records every kernel's time and its compulsory traffic and
//!   prints the GB/s and %-of-triad table at the end of a run.
//! - [`unfused`]: the baseline, a re-implementation of the seed's approach
//!   (separate passes, full sort), not the seed's code.
//! - [`dense`]: the dense all-reduce baseline step.
//! - [`ranks`]: W in-process ranks (threads + `LocalCollective`) driven in lock step.
//! - [`fixture`]: ready-made backend states (accumulators, packed buffers).

// Each binary uses a different subset of this shared code.
#![allow(dead_code)]

pub mod config;
pub mod data;
pub mod dense;
pub mod fixture;
pub mod ranks;
pub mod roofline;
pub mod stream;
pub mod unfused;

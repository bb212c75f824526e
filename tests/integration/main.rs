//! The one integration-test binary: every suite is a module here and shares
//! the helpers in `common`.

mod budget;
mod checkpoint;
mod common;
mod conformance;
mod coordinator;
#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
mod cuda;
mod faults;
mod reference;
mod sharing;
#[cfg(any(feature = "wgpu", feature = "cuda-emu"))]
mod transfer;
#[cfg(feature = "wgpu")]
mod wgpu;
mod wire;

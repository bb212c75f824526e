//! The one integration-test binary: every suite is a module here and shares
//! the helpers in `common`.

mod common;
mod conformance;
mod coordinator;
mod hyperclean;
mod reference;
mod wire;
#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
mod cuda;

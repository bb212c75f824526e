//! The one integration-test binary: every suite is a module here and shares
//! the helpers in `common`.

mod common;
mod conformance;
mod coordinator;
mod reference;
mod wire;
#[cfg(feature = "wgpu")]
mod wgpu;

//! The conformance suite on the WGSL backend (feature `wgpu`; lavapipe in CI).

conformance_suite!(wgpu, crate::wgpu::make_wgpu);

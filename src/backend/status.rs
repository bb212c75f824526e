//! The one small struct a backend reads back per step.

use bytemuck::{Pod, Zeroable};

/// What the fused pass reports: the only per-step device-to-host copy.
/// `repr(C)`, 32 bytes, identical layout on every backend.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub struct StepStatus {
    /// `A = sum(acc'^2)` over the new accumulator.
    pub acc_sq: f32,
    /// `P = sum(theta^2)`.
    pub theta_sq: f32,
    /// `s = sqrt(A) / max(sqrt(P), 1e-8)`.
    pub significance: f32,
    /// The threshold `tau` the test used.
    pub tau: f32,
    /// Number of non-finite values in the new accumulator `acc' = acc + delta`
    /// (non-finite `delta` or overflow) and in `theta`.
    pub nonfinite: u32,
    /// 1 when `s > tau` (and the input was finite), else 0.
    pub triggered: u32,
    /// Reserved, zero.
    pub reserved: [u32; 2],
}

impl StepStatus {
    /// Builds the status from the reductions, applying the spec's formula for
    /// `s` and the threshold test (host-side twin of the device code).
    pub fn from_sums(acc_sq: f32, theta_sq: f32, nonfinite: u32, tau: f32) -> StepStatus {
        let significance = acc_sq.sqrt() / theta_sq.sqrt().max(1e-8);
        StepStatus {
            acc_sq,
            theta_sq,
            significance,
            tau,
            nonfinite,
            triggered: u32::from(nonfinite == 0 && significance > tau),
            reserved: [0; 2],
        }
    }
}

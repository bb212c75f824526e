//! Operation 1: the fused accumulate pass and its one 32-byte readback.

use super::context::GpuContext;
use super::kernels::Kernels;
use super::recorder::{Bind, Recorder};
use super::state::{FUSED_TILE, Phase, WgpuState};
use crate::backend::StepStatus;
use crate::error::Result;

/// Records and runs the fused pass over every segment, then reads the status.
pub(super) fn accumulate(
    ctx: &GpuContext,
    k: &Kernels,
    state: &mut WgpuState,
    delta: &wgpu::Buffer,
    theta: &wgpu::Buffer,
    tau: f32,
) -> Result<StepStatus> {
    let spare = 1 - state.committed;
    let mut rec = Recorder::new(ctx, state.ring(Phase::Accumulate));
    rec.clear(&state.hist1, 0, 2048 * 4);
    for &(base, len) in &state.segs.list {
        let (off, size) = (4 * base, 4 * len);
        let mut p = [0u32; 16];
        p[2] = len as u32;
        p[3] = (base / FUSED_TILE) as u32;
        rec.dispatch(
            &k.fused,
            len.div_ceil(FUSED_TILE) as u32,
            p,
            &[
                Bind::range(delta, off, size),
                Bind::range(theta, off, size),
                Bind::range(&state.acc[state.committed], off, size),
                Bind::range(&state.acc[spare], off, size),
                Bind::all(&state.partials),
                Bind::all(&state.hist1),
            ],
        );
    }
    let mut p = [0u32; 16];
    p[2] = state.n.div_ceil(FUSED_TILE) as u32;
    p[3] = tau.to_bits();
    rec.dispatch(&k.fused_finish, 1, p, &[Bind::all(&state.partials), Bind::all(&state.status)]);
    rec.copy(&state.status, 0, &state.status_read, 0, 32);
    rec.submit()?;
    let mut status = StepStatus::default();
    ctx.read_mapped("wgpu accumulate", &state.status_read, 32, &state.map_slot, |b| {
        status = bytemuck::pod_read_unaligned(b);
    })?;
    state.pending = true;
    Ok(status)
}

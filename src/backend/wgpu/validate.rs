//! The peers' buffers checked on the device before `apply`
//! (`shaders/validate.wgsl`), with the host validator's errors: see
//! [`crate::Backend::validate_peers`] and `WgpuBackend`'s doc of it.

use super::apply::ensure_with;
use super::context::GpuContext;
use super::kernels::Kernels;
use super::recorder::{Bind, Recorder};
use super::state::{Phase, WgpuState};
use crate::backend::HostPeerCheck;
use crate::collective::Gathered;
use crate::error::Result;
use crate::wire::verdict::{VERDICT_WORDS, check_verdicts};

/// Runs the validation (see the module doc).
pub(super) fn validate_peers(
    ctx: &GpuContext,
    k: &Kernels,
    state: &mut WgpuState,
    gathered: &Gathered,
    host: HostPeerCheck<'_>,
) -> Result<()> {
    state.validated = false;
    let ranks = gathered.ranks();
    let total = gathered.total_len() as u64;
    if ranks == 0 {
        return Ok(());
    }
    if total % 4 != 0 || total > u64::from(u32::MAX) || total.max(4) > ctx.max_binding() {
        return host.run(gathered);
    }
    let offsets = gathered.offsets();
    state.host_spans.clear();
    for r in 0..ranks {
        state.host_spans.extend_from_slice(&[offsets[r] as u32, (offsets[r + 1] - offsets[r]) as u32]);
    }
    let verdict_bytes = (4 * VERDICT_WORDS * ranks) as u64;
    let store = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let out = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let read = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    ensure_with(ctx, &mut state.gathered, "gathered", total.max(4), store)?;
    ensure_with(ctx, &mut state.peer_spans, "peer spans", 8 * ranks as u64, store)?;
    ensure_with(ctx, &mut state.verdicts, "verdicts", verdict_bytes, out)?;
    ensure_with(ctx, &mut state.verdicts_read, "verdicts readback", verdict_bytes, read)?;
    let (Some((gbuf, gcap)), Some((spans, _)), Some((verdicts, _)), Some((verdicts_read, _))) =
        (&state.gathered, &state.peer_spans, &state.verdicts, &state.verdicts_read)
    else {
        unreachable!("ensured above");
    };
    ctx.write(gbuf, 0, gathered.as_bytes());
    ctx.write(spans, 0, bytemuck::cast_slice(&state.host_spans));
    let mut p = [0u32; 16];
    p[2] = state.n as u32;
    p[3] = u32::from(state.dtype.code());
    let mut rec = Recorder::new(ctx, state.ring(Phase::Validate));
    // The same ranges every step (one cached bind group): the staging up to
    // what one binding may cover, which holds the exchange (checked above).
    let bound = (*gcap).min(ctx.max_binding()) / 4 * 4;
    rec.dispatch(&k.validate, ranks as u32, p, &[Bind::range(gbuf, 0, bound), Bind::all(spans), Bind::all(verdicts)]);
    rec.copy(verdicts, 0, verdicts_read, 0, verdict_bytes);
    rec.submit()?;
    let words = &mut state.host_verdicts;
    words.clear();
    ctx.read_mapped("wgpu validate_peers", verdicts_read, verdict_bytes, &state.map_slot, |b| {
        words.extend(b.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
    })?;
    check_verdicts(&state.host_verdicts, state.n, state.dtype, super::context::BACKEND, "validate_peers")?;
    state.validated_offsets.clear();
    state.validated_offsets.extend_from_slice(offsets);
    state.validated = true;
    Ok(())
}

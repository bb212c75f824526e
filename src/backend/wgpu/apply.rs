//! Operation 3: unpack the gathered rank buffers and apply them in rank order
//! on the device, then error feedback (or zeroing) of the accumulator.
//!
//! The host reads each rank's header and chunk table with the shared reader
//! ([`ChunkTable::read_for`]; the caller validated the whole buffer, and the
//! structure and length are re-checked there so a bad buffer can never
//! address outside the upload) and uploads one descriptor per chunk from
//! its spans.

use super::context::{BACKEND, GpuContext};
use super::kernels::Kernels;
use super::recorder::{Bind, Recorder};
use super::state::{FUSED_TILE, Phase, WgpuState};
use crate::collective::Gathered;
use crate::error::{BackendError, Error, Result};
use crate::wire::layout::CHUNK_ELEMS;
use crate::wire::{ChunkTable, layout::Layout};

/// Makes sure `slot` holds a storage buffer of at least `bytes`.
fn ensure<'a>(
    ctx: &GpuContext,
    slot: &'a mut Option<(wgpu::Buffer, u64)>,
    label: &str,
    bytes: u64,
) -> Result<&'a wgpu::Buffer> {
    ensure_with(ctx, slot, label, bytes, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST)
}

/// Makes sure `slot` holds a buffer of `usage` of at least `bytes` (grown
/// to the next power of two, so similar sizes stop creating buffers).
pub(super) fn ensure_with<'a>(
    ctx: &GpuContext,
    slot: &'a mut Option<(wgpu::Buffer, u64)>,
    label: &str,
    bytes: u64,
    usage: wgpu::BufferUsages,
) -> Result<&'a wgpu::Buffer> {
    if bytes > ctx.limits.max_buffer_size {
        return Err(BackendError::Unsupported {
            backend: BACKEND,
            what: format!("{label} of {bytes} bytes (max_buffer_size {})", ctx.limits.max_buffer_size),
        }
        .into());
    }
    if slot.as_ref().is_none_or(|(_, cap)| *cap < bytes) {
        let cap = bytes.next_power_of_two().min(ctx.limits.max_buffer_size).max(bytes);
        *slot = Some((ctx.buffer(label, cap, usage), cap));
    }
    Ok(&slot.as_ref().expect("just ensured").0)
}

/// Runs operation 3 (see [`crate::Backend::apply`]).
pub(super) fn apply(
    ctx: &GpuContext,
    k: &Kernels,
    state: &mut WgpuState,
    theta: &wgpu::Buffer,
    gathered: &Gathered,
    own_rank: usize,
    weight: f32,
) -> Result<()> {
    let ranks = gathered.ranks();
    if own_rank >= ranks {
        return Err(crate::error::CollectiveError::InvalidRank { rank: own_rank, world: ranks }.into());
    }
    let (n, dtype) = (state.n, state.dtype);
    if state.peer_tables.len() < ranks {
        state.peer_tables.resize_with(ranks, || ChunkTable::for_len(n));
    }
    for (r, bytes) in gathered.iter() {
        state.peer_tables[r]
            .read_for(bytes, n, dtype)
            .map_err(|source| Error::InvalidPeerBuffer { rank: r, source })?;
    }
    state.host_desc.clear();
    for (r, table) in state.peer_tables[..ranks].iter().enumerate() {
        let start = gathered.offsets()[r] as u64;
        state.host_desc.extend(table.spans().map(|span| {
            [(start + span.index_offset) as u32, (start + span.value_offset) as u32, span.count, u32::from(span.bitmap)]
        }));
    }
    let total = gathered.total_len() as u64;
    if total > u64::from(u32::MAX) {
        return Err(
            BackendError::Unsupported { backend: BACKEND, what: format!("gathered buffers of {total} bytes") }.into()
        );
    }
    // After `validate_peers` accepted this very exchange its bytes are
    // already on the device.
    let uploaded = std::mem::take(&mut state.validated) && state.validated_offsets == gathered.offsets();
    ensure(ctx, &mut state.gathered, "gathered", total)?;
    ensure(ctx, &mut state.desc, "chunk descriptors", 16 * state.host_desc.len() as u64)?;
    let (gbuf, gcap) = state.gathered.as_ref().expect("ensured");
    let (dbuf, _) = state.desc.as_ref().expect("ensured");
    if !uploaded {
        ctx.write(gbuf, 0, gathered.as_bytes());
    }
    ctx.write(dbuf, 0, bytemuck::cast_slice(&state.host_desc));

    // The scratch is zero unless an earlier apply failed before its
    // apply_theta pass restored it (see shaders/apply_theta.wgsl); from here
    // until this apply has finished it may not be.
    let dirty = std::mem::replace(&mut state.scratch_dirty, true);
    let mut rec = Recorder::new(ctx, state.ring(Phase::Apply));
    if dirty {
        rec.clear(&state.sum, 0, 4 * state.n);
        rec.clear(&state.mark, 0, state.mark.size());
    }
    let acc = &state.acc[state.committed];
    let up = Uploads { gbuf, gcap: *gcap, dbuf };
    // One dispatch chain per rank, in rank order: the sums follow it.
    for r in 0..ranks {
        let rank = RankBytes { start: gathered.offsets()[r] as u64, lay: state.peer_tables[r].layout() };
        scatter(ctx, k, state, &rank, r, &up, &mut rec, 0, &state.sum);
    }
    for &(base, len) in &state.segs.list {
        let mut p = [0u32; 16];
        p[2] = len as u32;
        p[3] = weight.to_bits();
        p[4] = 0; // the runtime zero that keeps multiply and add separate
        rec.dispatch(
            &k.apply_theta,
            len.div_ceil(FUSED_TILE) as u32,
            p,
            &[
                Bind::range(&state.sum, 4 * base, 4 * len),
                Bind::range(&state.mark, base / 8, 4 * len.div_ceil(32)),
                Bind::range(theta, 4 * base, 4 * len),
            ],
        );
    }
    if state.error_feedback {
        let own = RankBytes { start: gathered.offsets()[own_rank] as u64, lay: state.peer_tables[own_rank].layout() };
        scatter(ctx, k, state, &own, own_rank, &up, &mut rec, 1, acc);
    } else {
        rec.clear(acc, 0, 4 * state.n);
    }
    rec.submit()?;
    ctx.wait("wgpu apply")?;
    state.scratch_dirty = false;
    Ok(())
}

/// Where one rank's buffer sits in the upload, and its layout (read by
/// its [`ChunkTable`]).
struct RankBytes<'t> {
    start: u64,
    lay: &'t Layout,
}

/// The uploaded gathered bytes and chunk descriptors.
struct Uploads<'a> {
    gbuf: &'a wgpu::Buffer,
    gcap: u64,
    dbuf: &'a wgpu::Buffer,
}

/// Records rank `r`'s scatter over every segment: `mode` 0 adds into `dst`
/// (the sum) and marks indices, 1 subtracts from `dst` (the accumulator).
#[allow(clippy::too_many_arguments)]
fn scatter<'a>(
    ctx: &GpuContext,
    k: &'a Kernels,
    state: &'a WgpuState,
    rl: &RankBytes<'_>,
    r: usize,
    up: &Uploads<'a>,
    rec: &mut Recorder<'a>,
    mode: u32,
    dst: &'a wgpu::Buffer,
) {
    let chunks = state.chunks() as usize;
    let size = state.dtype.size() as u64;
    let chunk = CHUNK_ELEMS as u64;
    let win = |start: u64, end: u64| super::select_pack::window(ctx, start, end, up.gcap.min(up.gbuf.size()));
    for &(base, len) in &state.segs.list {
        let c0 = (base / chunk) as usize;
        let c1 = (base + len).div_ceil(chunk) as usize;
        let e0 = rl.lay.entry_offsets[c0];
        let e1 = rl.lay.entry_offsets.get(c1).copied().unwrap_or(rl.lay.count);
        if e0 == e1 {
            continue;
        }
        let (io, is) = win(rl.start + rl.lay.index_offsets[c0], rl.start + rl.lay.index_offsets[c1]);
        let values = rl.start + rl.lay.values_offset();
        let (vo, vs) = win(values + e0 * size, values + e1 * size);
        let mut p = [0u32; 16];
        p[2] = c0 as u32;
        p[3] = (r * chunks) as u32;
        p[4] = (io / 4) as u32;
        p[5] = (vo / 4) as u32;
        p[6] = u32::from(state.dtype.code());
        p[7] = mode;
        p[8] = state.n as u32;
        rec.dispatch(
            &k.scatter,
            (c1 - c0) as u32,
            p,
            &[
                Bind::all(up.dbuf),
                Bind::range(up.gbuf, io, is),
                Bind::range(up.gbuf, vo, vs),
                Bind::range(dst, 4 * base, 4 * len),
                Bind::range(&state.mark, base / 8, 4 * len.div_ceil(32)),
            ],
        );
    }
}

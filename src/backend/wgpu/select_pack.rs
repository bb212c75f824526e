//! Operation 2: selection (docs/selection.md) and packing (docs/wire-format.md)
//! on the device. Phase 1 runs the cut search, the tile counts and the scan,
//! which writes the header and chunk table. Phase 2 packs indices and
//! values, reduces the checksum, and copies the buffer back.
//!
//! Under the top-k and dense rules, when the packing buffers fit one storage binding
//! ([`PackBounds`]), both phases are recorded without a host round trip
//! between them: phase 2 binds whole buffers, clears the largest sections
//! the rule can write and sizes the checksum from the scan's output on the
//! device, and one readback of that bound brings the header, the table and
//! the sections, which the host joins after reading the layout with the
//! shared reader ([`crate::wire::ChunkTable`]). Otherwise (threshold, or
//! buffers larger than a binding) the host first reads the header
//! and chunk table back, lays the buffer out with the shared reader (the
//! same arithmetic the device used) and binds exactly the ranges each
//! segment writes.

use super::context::{BACKEND, GpuContext};
use super::kernels::Kernels;
use super::recorder::{Bind, Recorder};
use super::state::{FUSED_TILE, PACK_TILE, PackBounds, Phase, Rule, WgpuState};
use crate::error::{BackendError, Result};
use crate::wire::layout::{self, CHUNK_ELEMS};

/// Selection state initial words: done, prefix, above, k, kmax, lo, tie, take.
pub(super) fn initial_selection(rule: Rule) -> [u32; 8] {
    match rule {
        Rule::TopK { k, kmax } => [0, 0, 0, k, kmax, 0, u32::MAX, 0],
        // The threshold kernel fills in `lo`.
        Rule::Threshold { .. } => [0, 0, 0, 0, 0, 0, u32::MAX, 0],
        Rule::Dense => [1, 0, 0, 0, 0, 0, u32::MAX, 0],
    }
}

/// Runs both phases and returns the packed bytes.
pub(super) fn select_pack<'s>(ctx: &GpuContext, k: &Kernels, state: &'s mut WgpuState) -> Result<&'s [u8]> {
    if let Some(bounds) = state.bounds {
        phase_select(ctx, k, state, false)?;
        phase_pack_bounded(ctx, k, state, bounds)?;
        return read_bounded(ctx, state, bounds);
    }
    phase_select(ctx, k, state, true)?;
    read_chunk_table(ctx, state)?;
    phase_pack(ctx, k, state)?;
    let total = state.own_table.layout().total_bytes;
    let host = &mut state.packed_host;
    host.clear();
    ctx.read_mapped("wgpu select_pack", &state.packed_read, total, &state.map_slot, |b| host.extend_from_slice(b))?;
    Ok(&state.packed_host)
}

/// Phase 1; `copy_head`: also copy the header and chunk table to their
/// readback buffer.
fn phase_select(ctx: &GpuContext, k: &Kernels, state: &mut WgpuState, copy_head: bool) -> Result<()> {
    let acc = &state.acc[state.committed];
    let n = state.n;
    let mut rec = Recorder::new(ctx, state.ring(Phase::Select));
    rec.copy(&state.sel_init, 0, &state.sel, 0, 32);
    match state.rule {
        Rule::TopK { .. } => {
            // (level, digit shift, bins, match shift of the next histogram)
            let levels = [(1u32, 20u32, 2048u32), (2, 9, 2048), (3, 0, 512)];
            for (li, &(level, shift, bins)) in levels.iter().enumerate() {
                if level > 1 {
                    rec.clear(&state.hist23, 0, 2048 * 4);
                    let match_shift = levels[li - 1].1;
                    for &(base, len) in &state.segs.list {
                        let mut p = [0u32; 16];
                        p[2] = len as u32;
                        p[3] = match_shift;
                        p[4] = shift;
                        p[5] = bins - 1;
                        rec.dispatch(
                            &k.hist_level,
                            len.div_ceil(FUSED_TILE) as u32,
                            p,
                            &[Bind::range(acc, 4 * base, 4 * len), Bind::all(&state.sel), Bind::all(&state.hist23)],
                        );
                    }
                }
                let hist = if level == 1 { &state.hist1 } else { &state.hist23 };
                let mut p = [0u32; 16];
                p[2] = level;
                p[3] = shift;
                p[4] = bins;
                rec.dispatch(&k.cut, 1, p, &[Bind::all(hist), Bind::all(&state.sel)]);
            }
        }
        Rule::Threshold { rel } => {
            let mut p = [0u32; 16];
            p[2] = rel.to_bits();
            p[3] = (n as f32).to_bits();
            rec.dispatch(&k.threshold_cut, 1, p, &[Bind::all(&state.status), Bind::all(&state.sel)]);
        }
        Rule::Dense => {}
    }
    for &(base, len) in &state.segs.list {
        let mut p = [0u32; 16];
        p[2] = len as u32;
        p[3] = (base / PACK_TILE) as u32;
        rec.dispatch(
            &k.tile_count,
            len.div_ceil(PACK_TILE) as u32,
            p,
            &[Bind::range(acc, 4 * base, 4 * len), Bind::all(&state.sel), Bind::all(&state.tiles)],
        );
    }
    let head = state.head_bytes();
    let mut p = [0u32; 16];
    p[2] = n as u32;
    p[3] = n.div_ceil(PACK_TILE) as u32;
    p[4] = state.chunks() as u32;
    p[5] = u32::from(state.dtype.code());
    rec.dispatch(
        &k.scan,
        1,
        p,
        &[
            Bind::all(&state.sel),
            Bind::all(&state.tiles),
            Bind::all(&state.tile_info),
            Bind::all(&state.chunk_info),
            Bind::range(&state.pk_idx, 0, head),
        ],
    );
    if copy_head {
        rec.copy(&state.pk_idx, 0, &state.head_read, 0, head);
    }
    rec.submit()
}

/// Phase 2 on the device's layout alone (see the module doc): nothing in
/// it depends on this step's layout, so its parameter blocks and bind
/// groups are the same at every sync. `packed_read` receives the bounded
/// index side at 0 and the bounded values side at `bounds.idx`.
fn phase_pack_bounded(ctx: &GpuContext, k: &Kernels, state: &WgpuState, bounds: PackBounds) -> Result<()> {
    let head = state.head_bytes();
    let mut rec = Recorder::new(ctx, state.ring(Phase::Pack));
    // Sub-word writes are atomicOr into zeroed words.
    rec.clear(&state.pk_idx, head, bounds.idx - head);
    rec.clear(&state.pk_val, 0, bounds.val);
    for &(base, len) in &state.segs.list {
        let idx = (0, state.pk_idx.size());
        let val = (0, state.pk_val.size());
        dispatch_pack_write(&mut rec, k, state, (base, len), idx, val);
    }
    rec.clear(&state.checksum, 0, 4);
    for (mode, buf, bytes) in [(1u32, &state.pk_idx, bounds.idx), (2, &state.pk_val, bounds.val)] {
        let mut p = [0u32; 16];
        p[4] = mode;
        p[5] = state.chunks() as u32;
        rec.dispatch(
            &k.checksum,
            (bytes / 4).div_ceil(FUSED_TILE) as u32,
            p,
            &[Bind::all(buf), Bind::all(&state.chunk_info), Bind::all(&state.checksum)],
        );
    }
    rec.copy(&state.pk_idx, 0, &state.packed_read, 0, bounds.idx);
    rec.copy(&state.pk_val, 0, &state.packed_read, bounds.idx, bounds.val);
    rec.copy(&state.checksum, 0, &state.packed_read, layout::CHECKSUM_OFFSET as u64, 4);
    rec.submit()
}

/// The one readback of a bounded pack: reads the header and chunk table
/// with the shared reader (into `own_table`), then joins the index side's
/// first `values offset` bytes and the values side's bytes into
/// `packed_host`. A layout that does not fit the bounds, or is not for this
/// state's `n` and dtype, is a driver error.
fn read_bounded<'s>(ctx: &GpuContext, state: &'s mut WgpuState, bounds: PackBounds) -> Result<&'s [u8]> {
    let WgpuState { own_table, packed_host, packed_read, map_slot, .. } = state;
    packed_host.clear();
    let mut read = Ok(0);
    ctx.read_mapped("wgpu select_pack", packed_read, bounds.idx + bounds.val, map_slot, |bytes| {
        let (idx, val) = bytes.split_at(bounds.idx as usize);
        read = own_table.read_prefix(idx);
        if let Ok(total) = read {
            let values_at = own_table.layout().values_offset();
            let value_bytes = total.saturating_sub(values_at);
            if values_at <= bounds.idx && value_bytes <= bounds.val {
                packed_host.extend_from_slice(&idx[..values_at as usize]);
                packed_host.extend_from_slice(&val[..value_bytes as usize]);
            }
        }
    })?;
    let (n, dtype) = (own_table.layout().n, own_table.layout().dtype);
    match read {
        Ok(total) if total == packed_host.len() as u64 && n == state.n && dtype == state.dtype => {
            Ok(&state.packed_host)
        }
        other => Err(BackendError::Driver {
            backend: BACKEND,
            call: "select_pack scan",
            message: format!(
                "device produced a layout outside the rule's bounds or inconsistent ({other:?}, n {n}, {dtype:?}, {bounds:?})"
            ),
        }
        .into()),
    }
}

/// Reads the header and chunk table written by the scan into
/// `state.own_table` with the shared reader, which checks them against the
/// format (a device that wrote an inconsistent table is a driver error).
fn read_chunk_table(ctx: &GpuContext, state: &mut WgpuState) -> Result<()> {
    let head = state.head_bytes();
    let table = &mut state.own_table;
    let mut read = Ok(0);
    ctx.read_mapped("wgpu select_pack", &state.head_read, head, &state.map_slot, |b| read = table.read_prefix(b))?;
    let (n, dtype) = (table.layout().n, table.layout().dtype);
    match read {
        Ok(_) if n == state.n && dtype == state.dtype => Ok(()),
        other => Err(BackendError::Driver {
            backend: BACKEND,
            call: "select_pack scan",
            message: format!("device produced an inconsistent header or chunk table ({other:?}, n {n}, {dtype:?})"),
        }
        .into()),
    }
}

/// The binding for the `[start, end)` byte range of a buffer of `cap`
/// bytes: the whole buffer when it fits one storage binding (the same range
/// every step, so its bind group is cached), else the range rounded out to
/// the storage alignment (start) and to a whole word (end), clamped to `cap`.
pub(super) fn window(ctx: &GpuContext, start: u64, end: u64, cap: u64) -> (u64, u64) {
    if cap <= ctx.max_binding() {
        return (0, cap);
    }
    let align = ctx.storage_align();
    let lo = start / align * align;
    let hi = end.next_multiple_of(4).min(cap).max(lo + 4);
    (lo, hi - lo)
}

fn phase_pack(ctx: &GpuContext, k: &Kernels, state: &mut WgpuState) -> Result<()> {
    let lay = state.own_table.layout();
    let head = state.head_bytes();
    let values_off = lay.values_offset();
    let vbytes = lay.total_bytes - values_off;
    let size = state.dtype.size() as u64;
    let idx_cap = state.pk_idx.size();
    let val_cap = state.pk_val.size();
    let mut rec = Recorder::new(ctx, state.ring(Phase::Pack));
    rec.clear(&state.pk_idx, head, values_off - head);
    rec.clear(&state.pk_val, 0, vbytes);
    let chunk = CHUNK_ELEMS as u64;
    for &(base, len) in &state.segs.list {
        let c0 = (base / chunk) as usize;
        let c1 = (base + len).div_ceil(chunk) as usize;
        let e0 = lay.entry_offsets[c0];
        let e1 = lay.entry_offsets.get(c1).copied().unwrap_or(lay.count);
        if e1 == e0 {
            continue;
        }
        let idx = window(ctx, lay.index_offsets[c0], lay.index_offsets[c1], idx_cap);
        let val = window(ctx, e0 * size, e1 * size, val_cap);
        dispatch_pack_write(&mut rec, k, state, (base, len), idx, val);
    }
    rec.clear(&state.checksum, 0, 4);
    // Checksum windows: at most one segment's worth of bytes per binding.
    let step = state.segs.elems * 4;
    for (buf, len, word_base) in [(&state.pk_idx, values_off, 0u64), (&state.pk_val, vbytes, values_off / 4)] {
        let mut at = 0;
        while at < len {
            let bytes = step.min(len - at);
            let words = bytes / 4;
            let mut p = [0u32; 16];
            p[2] = words as u32;
            p[3] = (word_base + at / 4) as u32;
            rec.dispatch(
                &k.checksum,
                words.div_ceil(FUSED_TILE) as u32,
                p,
                // The kernel reads `words` words; binding the whole segment
                // window keeps the range (and its bind group) the same every step.
                &[
                    Bind::range(buf, at, step.min(buf.size() - at)),
                    Bind::all(&state.chunk_info),
                    Bind::all(&state.checksum),
                ],
            );
            at += bytes;
        }
    }
    rec.copy(&state.pk_idx, 0, &state.packed_read, 0, values_off);
    rec.copy(&state.pk_val, 0, &state.packed_read, values_off, vbytes);
    rec.copy(&state.checksum, 0, &state.packed_read, layout::CHECKSUM_OFFSET as u64, 4);
    rec.submit()
}

/// One segment's `pack_write` dispatch: the segment `(base, len)` of the
/// committed accumulator, writing through the `(offset, size)` windows
/// `idx` of the index buffer and `val` of the values buffer.
fn dispatch_pack_write(
    rec: &mut Recorder<'_>,
    k: &Kernels,
    state: &WgpuState,
    (base, len): (u64, u64),
    (idx_off, idx_size): (u64, u64),
    (val_off, val_size): (u64, u64),
) {
    let mut p = [0u32; 16];
    p[2] = len as u32;
    p[3] = base as u32;
    p[4] = (base / PACK_TILE) as u32;
    p[5] = (idx_off / 4) as u32;
    p[6] = (val_off / 4) as u32;
    p[7] = u32::from(state.dtype.code());
    rec.dispatch(
        &k.pack_write,
        len.div_ceil(PACK_TILE) as u32,
        p,
        &[
            Bind::range(&state.acc[state.committed], 4 * base, 4 * len),
            Bind::all(&state.sel),
            Bind::all(&state.tile_info),
            Bind::all(&state.chunk_info),
            Bind::range(&state.pk_idx, idx_off, idx_size),
            Bind::range(&state.pk_val, val_off, val_size),
        ],
    );
}
